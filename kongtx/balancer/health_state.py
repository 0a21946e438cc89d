# -*- test-case-name: tests.unit.test_balancer_health_state -*-
"""Which balanced addresses are unhealthy: one table every part of the node shares.

Why a table of its own: four parties change or read target health and none of
them should know the others.  The balancer reads it on every request (one dict
lookup, one set membership); the active and passive health checkers, the Admin
API's ``/healthy`` and ``/unhealthy`` and the cluster's gossip write it.  Each
write names its ``source``; listeners hear only real changes, so the cluster
layer can publish local changes and apply remote ones (``source="cluster"``)
without echoing them back.

Addresses are resolved ``"ip:port"`` strings (``"[::1]:8080"`` for IPv6): a
target naming a host with three A records is three addresses, each with its own
health, as in Kong.  Everything is healthy until something says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Literal

Source = Literal["active", "passive", "manual", "cluster"]
#: called as listener(upstream_id, address, healthy, source) after a change
HealthListener = Callable[[str, str, bool, Source], None]
#: called as listener(upstream_id, kept) when verdicts are dropped: ``kept`` the
#: addresses still current (:meth:`HealthState.retain`), None when the upstream is gone
ForgetListener = Callable[[str, "AbstractSet[str] | None"], None]


def address(host: str, port: int) -> str:
    """The canonical ``"ip:port"`` key of a resolved address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HealthState:
    """Unhealthy addresses per upstream id, with change listeners."""

    def __init__(self) -> None:
        self._unhealthy: dict[str, set[str]] = {}
        self._listeners: list[HealthListener] = []
        self._forget_listeners: list[ForgetListener] = []

    def is_healthy(self, upstream_id: str, addr: str) -> bool:
        """Hot path: has nothing marked ``addr`` of this upstream unhealthy?"""
        down = self._unhealthy.get(upstream_id)
        return down is None or addr not in down

    def unhealthy(self, upstream_id: str) -> frozenset[str]:
        """The addresses of ``upstream_id`` currently marked unhealthy."""
        return frozenset(self._unhealthy.get(upstream_id, ()))

    def set(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> bool:
        """Record a verdict; listeners are told (and True returned) only on a change."""
        down = self._unhealthy.get(upstream_id)
        if healthy:
            if down is None or addr not in down:
                return False
            down.discard(addr)
            if not down:
                del self._unhealthy[upstream_id]
        else:
            if down is None:
                down = self._unhealthy[upstream_id] = set()
            elif addr in down:
                return False
            down.add(addr)
        for listener in list(self._listeners):
            listener(upstream_id, addr, healthy, source)
        return True

    def all_unhealthy(self) -> list[tuple[str, str]]:
        """Every ``(upstream_id, address)`` marked unhealthy (to bring a new process up to date)."""
        return [(u, a) for u, down in self._unhealthy.items() for a in sorted(down)]

    def forget(self, upstream_id: str) -> None:
        """Drop every verdict about an upstream (it was deleted)."""
        self._unhealthy.pop(upstream_id, None)
        for listener in list(self._forget_listeners):
            listener(upstream_id, None)

    def retain(self, upstream_id: str, addresses: AbstractSet[str]) -> list[str]:
        """Drop the verdicts of the upstream's addresses not in ``addresses`` (no target
        resolves to them any more); like :meth:`forget`, change listeners are not told
        (forget listeners are, with ``addresses``)."""
        for listener in list(self._forget_listeners):
            listener(upstream_id, addresses)
        down = self._unhealthy.get(upstream_id)
        if not down:
            return []
        gone = sorted(down - addresses)
        down.difference_update(gone)
        if not down:
            del self._unhealthy[upstream_id]
        return gone

    def add_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: HealthListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_forget_listener(self, listener: ForgetListener) -> None:
        """Hear of dropped verdicts (the cluster's table of stamps drops them too)."""
        self._forget_listeners.append(listener)

    def remove_forget_listener(self, listener: ForgetListener) -> None:
        if listener in self._forget_listeners:
            self._forget_listeners.remove(listener)
