# -*- test-case-name: tests.unit.test_balancer_health -*-
"""What an upstream's ``healthchecks`` asks for, and Kong's rule for counting outcomes.

Both checkers (:mod:`kongtx.balancer.active_checks` and the passive one in
:mod:`kongtx.balancer.health`) share one counting rule, Kong 1.x's
(lua-resty-healthcheck): a success resets every failure counter, any failure
resets the success counter; ``healthy.successes`` consecutive successes make an
unhealthy address healthy, ``unhealthy.http_failures`` / ``tcp_failures`` /
``timeouts`` failures of that kind make a healthy address unhealthy; a
threshold of 0 disables that counter.  Whoever changes an address's health
(any source), its counters start again from zero.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kongtx.balancer.health_state import HealthState, Source
from kongtx.log import logger

# every health-check module logs under this one namespace
log = logger("kongtx.balancer.health")

Row = dict[str, Any]
#: what one attempt or probe came to: "http" (with its status), "tcp_failure", "timeout",
#: or "success" (a ``tcp`` probe connected)
Kind = Literal["http", "tcp_failure", "timeout", "success"]
Outcome = tuple[Kind, int]

#: Kong 1.x's ``healthchecks`` defaults (the issue 9 contract); rows are merged over them.
DEFAULTS: dict[str, Any] = {
    "active": {
        "type": "http",
        "timeout": 1,
        "concurrency": 10,
        "http_path": "/",
        "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
        "unhealthy": {
            "interval": 0,
            "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
            "tcp_failures": 0,
            "timeouts": 0,
            "http_failures": 0,
        },
    },
    "passive": {
        "type": "http",
        "healthy": {
            "http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
            + [300, 301, 302, 303, 304, 305, 306, 307, 308],
            "successes": 0,
        },
        "unhealthy": {
            "http_statuses": [429, 500, 503],
            "tcp_failures": 0,
            "timeouts": 0,
            "http_failures": 0,
        },
    },
}


# ------------------------------------------------------------------ configuration


def _merge(defaults: Mapping[str, Any], given: Any) -> dict[str, Any]:
    merged = copy.deepcopy(dict(defaults))
    if not isinstance(given, Mapping):
        return merged
    for key, value in given.items():
        if isinstance(merged.get(key), dict) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def healthchecks(row: Mapping[str, Any]) -> dict[str, Any]:
    """The upstream's ``healthchecks`` merged over the defaults (rows written by the
    DAO are complete already; this keeps hand-made or older rows working)."""
    return _merge(DEFAULTS, row.get("healthchecks"))


def active_on(checks: Mapping[str, Any]) -> bool:
    """Does this ``healthchecks`` ask for probes (an active interval > 0)?"""
    active = checks["active"]
    return bool(active["healthy"]["interval"] > 0 or active["unhealthy"]["interval"] > 0)


def passive_on(checks: Mapping[str, Any]) -> bool:
    """Does this ``healthchecks`` count traffic (a passive threshold > 0)?"""
    passive = checks["passive"]
    unhealthy = passive["unhealthy"]
    return bool(
        passive["healthy"]["successes"] > 0
        or unhealthy["tcp_failures"] > 0
        or unhealthy["timeouts"] > 0
        or unhealthy["http_failures"] > 0
    )


# ------------------------------------------------------------------ counting


@dataclass
class Counts:
    """Consecutive outcomes of one address (Kong's four counters)."""

    successes: int = 0
    http_failures: int = 0
    tcp_failures: int = 0
    timeouts: int = 0


def count(
    counts: Counts, rules: Mapping[str, Any], kind: str, status: int, healthy: bool
) -> bool | None:
    """Count one outcome under ``rules`` (an ``active`` or ``passive`` block).

    Returns the new verdict when a threshold is reached and it differs from
    ``healthy`` (the address's current state), else None.  A status in neither
    list counts for nothing, as in Kong.
    """
    good, bad = rules["healthy"], rules["unhealthy"]
    if kind == "success" or (kind == "http" and status in good["http_statuses"]):
        counts.http_failures = counts.tcp_failures = counts.timeouts = 0
        counts.successes += 1
        need = good["successes"]
        return True if not healthy and need > 0 and counts.successes >= need else None
    if kind == "http":
        if status not in bad["http_statuses"]:
            return None
        counts.http_failures += 1
        seen, limit = counts.http_failures, bad["http_failures"]
    elif kind == "tcp_failure":
        counts.tcp_failures += 1
        seen, limit = counts.tcp_failures, bad["tcp_failures"]
    elif kind == "timeout":
        counts.timeouts += 1
        seen, limit = counts.timeouts, bad["timeouts"]
    else:
        return None
    counts.successes = 0
    return False if healthy and limit > 0 and seen >= limit else None


class Counters:
    """Counts per (upstream id, address), dropped whenever that address changes health.

    Args:
        health: the node's table; a verdict reached by :meth:`record` is written to it.
    """

    def __init__(self, health: HealthState) -> None:
        self.health = health
        self.counts: dict[tuple[str, str], Counts] = {}

    def record(
        self,
        upstream_id: str,
        addr: str,
        rules: Mapping[str, Any],
        kind: str,
        status: int,
        source: Source,
    ) -> None:
        """Count one outcome of ``addr``; write the verdict as ``source`` when it flips."""
        key = (upstream_id, addr)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = Counts()
        verdict = count(counts, rules, kind, status, self.health.is_healthy(upstream_id, addr))
        if verdict is not None:
            self.counts.pop(key, None)
            if self.health.set(upstream_id, addr, verdict, source):
                log.info(
                    "{source} health check: {addr} of upstream {upstream} is now {state}",
                    source=source,
                    addr=addr,
                    upstream=upstream_id,
                    state="healthy" if verdict else "unhealthy",
                )

    def changed(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        """``HealthState`` listener: a change of health (any source) restarts the counts."""
        self.counts.pop((upstream_id, addr), None)

    def forget(self, upstream_id: str) -> None:
        """Drop the counts of a deleted upstream."""
        for key in [k for k in self.counts if k[0] == upstream_id]:
            del self.counts[key]
