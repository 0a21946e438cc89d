# -*- test-case-name: tests.unit.test_balancer_health -*-
"""Health checks of upstream targets: active probes and passive counters (issue 9).

Both checkers only *write* :class:`~kongtx.balancer.health_state.HealthState`;
the balancer reads it.  The pieces:

* :mod:`kongtx.balancer.health_rules`: the ``healthchecks`` defaults and Kong's
  counting rule, shared by both checkers.
* :mod:`kongtx.balancer.probe`: the active checks' HTTP/HTTPS/TCP probe.
* :class:`~kongtx.balancer.active_checks.ActiveChecker`: probes the addresses
  of every upstream whose ``healthchecks.active`` has an interval > 0.
* :class:`~kongtx.balancer.passive_checks.PassiveChecker` counts the proxy's own outcomes
  (``Balancers.outcome_listeners``) against ``healthchecks.passive``.  Passive
  checks never probe: an unhealthy address gets no traffic, so only the
  successes of traffic that still reaches it (or another source: active
  probes, ``POST .../healthy``, the cluster) bring it back, as in Kong.
* :class:`HealthChecks` (here) is the node's one owner of both, and answers the
  Admin API's ``/healthy``, ``/unhealthy`` and ``/health``.

This module is the public face of health checking: it re-exports what callers
and tests use from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTCP

from kongtx.balancer.active_checks import (
    ActiveChecker,
    BalancerSource,
    Resolved,
    UpstreamSource,
    resolve,
)
from kongtx.balancer.health_rules import (
    DEFAULTS,
    Counts,
    Kind,
    Outcome,
    Row,
    active_on,
    count,
    healthchecks,
    passive_on,
)
from kongtx.balancer.health_state import HealthState, address
from kongtx.balancer.passive_checks import MAX_CACHED_RULES, PassiveChecker, PickLike
from kongtx.balancer.probe import Prober, http_probe, probe_request, target_host
from kongtx.clock import Clock

__all__ = [
    "DEFAULTS",
    "MAX_CACHED_RULES",
    "ActiveChecker",
    "BalancerSource",
    "Counts",
    "HealthChecks",
    "Kind",
    "Outcome",
    "PassiveChecker",
    "PickLike",
    "Prober",
    "Resolved",
    "Row",
    "UpstreamSource",
    "active_on",
    "count",
    "healthchecks",
    "http_probe",
    "passive_on",
    "probe_request",
    "target_host",
]


class HealthChecks:
    """One node's health checking: the table, both checkers and manual verdicts."""

    def __init__(
        self,
        health: HealthState,
        balancers: BalancerSource,
        upstreams: UpstreamSource,
        clock: Clock,
        reactor: IReactorTCP,
        reconcile_interval: float = 5.0,
    ) -> None:
        self.health = health
        self.balancers = balancers
        self.upstreams = upstreams
        self.active = ActiveChecker(
            upstreams,
            balancers,
            health,
            clock,
            reactor=reactor,
            reconcile_interval=reconcile_interval,
        )
        self.passive = PassiveChecker(health)
        #: upstream ids an operator set something on (their /health is never HEALTHCHECKS_OFF)
        self.manual: set[str] = set()

    def start(self) -> None:
        if self.passive.on_outcome not in self.balancers.outcome_listeners:
            self.balancers.outcome_listeners.append(self.passive.on_outcome)
            self.passive.start()
        self.active.start()

    def stop(self) -> None:
        self.active.stop()
        if self.passive.on_outcome in self.balancers.outcome_listeners:
            self.balancers.outcome_listeners.remove(self.passive.on_outcome)
            self.passive.stop()

    def on_change(self, collection: str, kind: Any, old: Any, new: Any) -> None:
        """DAO listener: a local upstream or target change is probed without waiting."""
        if collection in ("upstreams", "targets"):
            self.active.soon()

    async def resolve(self, upstream: Row) -> Resolved:
        """The upstream's targets resolved to addresses ({} when resolution failed)."""
        return await resolve(self.balancers, upstream) or {}

    async def set_target(self, upstream: Row, target: str, healthy: bool) -> None:
        """``POST .../healthy|unhealthy``: every resolved address of ``target``."""
        upstream_id = str(upstream["id"])
        self.manual.add(upstream_id)
        for ip, port, _weight in (await self.resolve(upstream)).get(target, []):
            self.health.set(upstream_id, address(ip, port), healthy, "manual")

    async def report(self, upstream: Row, targets: Sequence[Row]) -> list[dict[str, Any]]:
        """``GET /upstreams/{u}/health``'s rows: each target row plus its ``health``."""
        upstream_id = str(upstream["id"])
        checks = healthchecks(upstream)
        resolved = await self.resolve(upstream)
        down = self.health.unhealthy(upstream_id)
        off = not (active_on(checks) or passive_on(checks) or upstream_id in self.manual or down)
        rows = []
        for row in targets:
            addrs = [address(ip, port) for ip, port, _ in resolved.get(str(row["target"]), [])]
            if not addrs:
                state = "DNS_ERROR"
            elif off:
                state = "HEALTHCHECKS_OFF"
            elif any(a not in down for a in addrs):
                state = "HEALTHY"
            else:
                state = "UNHEALTHY"
            rows.append({**row, "health": state})
        return rows

    async def targets_of(self, upstream: Row) -> list[Row]:
        """An upstream's target rows, oldest first (Kong's order for ``/health``)."""
        rows = await self.upstreams.find_all("targets", {"upstream_id": upstream["id"]})
        return sorted(rows, key=lambda r: (r.get("created_at") or 0, str(r["id"])))

    async def states(self) -> list[tuple[str, str, str]]:
        """``(upstream name, target, health)`` of every target: the ``/metrics`` gauge."""
        found = []
        for upstream in await self.upstreams.find_all("upstreams", {}):
            for row in await self.report(upstream, await self.targets_of(upstream)):
                found.append((str(upstream["name"]), str(row["target"]), str(row["health"])))
        return found
