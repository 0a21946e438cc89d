# -*- test-case-name: tests.unit.test_balancer_health -*-
"""Passive health checks: the proxy's own outcomes counted against ``healthchecks.passive``.

A module of its own (re-exported by :mod:`kongtx.balancer.health`) so that a proxy
worker process, which counts its traffic but runs no active probes (those run in
its master), does not import the probe client and the active checker.
"""

from __future__ import annotations

from typing import Any, Protocol

from kongtx.balancer.health_rules import Counters, healthchecks, passive_on
from kongtx.balancer.health_state import HealthState
from kongtx.store.interface import RowView

#: upstream rows whose merged ``healthchecks`` the passive checker keeps before starting over
MAX_CACHED_RULES = 10000


class PickLike(Protocol):
    """The part of the balancer's ``Pick`` the passive checker reads."""

    @property
    def address(self) -> str: ...


class PassiveChecker:
    """Counts proxied outcomes against the upstream's passive thresholds."""

    def __init__(self, health: HealthState) -> None:
        self.health = health
        self.counters = Counters(health)
        # upstream id -> (the row seen last, its merged healthchecks): one merge per row version
        self._rules: dict[str, tuple[RowView, dict[str, Any]]] = {}

    def start(self) -> None:
        """Restart an address's counts whenever its health changes."""
        self.health.add_listener(self.counters.changed)

    def stop(self) -> None:
        self.health.remove_listener(self.counters.changed)

    def on_outcome(self, upstream: RowView, pick: PickLike, kind: str, status: int) -> None:
        """``Balancers.outcome_listeners`` entry: one proxied attempt's outcome."""
        upstream_id = str(upstream["id"])
        cached = self._rules.get(upstream_id)
        if cached is None or cached[0] is not upstream:
            if len(self._rules) > MAX_CACHED_RULES:
                self._rules.clear()
            cached = self._rules[upstream_id] = (upstream, healthchecks(upstream))
        checks = cached[1]
        if not passive_on(checks):
            return
        self.counters.record(upstream_id, pick.address, checks["passive"], kind, status, "passive")
