# -*- test-case-name: tests.unit.test_health_gossip -*-
"""Target health shared by every node: the ``kongtx-health`` Serf user event.

Kong 1.x kept health per node (each worker even, until it shared them over
shm): a target one node found dead kept receiving traffic from every other
node until each found out by itself.  Here every change of the node's
:class:`~kongtx.balancer.health_state.HealthState` that did not come from the
cluster (active probe, passive counter, ``POST .../healthy|unhealthy``) is
published as one small user event, and every node applies the events it
receives with ``source="cluster"``, so they are not published again.

Ordering: two nodes may change the same address at about the same time.  A
verdict is stamped with (Lamport time, origin node): the Serf LTime of the
event that first carried it.  Per (upstream id, address) a node keeps the
stamp of the last verdict it applied or published and ignores anything not
newer, so a late or replayed event never undoes a later one, and every node
settles on the same last verdict (ties broken by origin name).  A node's own
events coming back through gossip carry the stamp it already holds: ignored.

Late joiners and lost events: Serf replays its recent events (the last 512
event LTimes, ``kong`` invalidations included) to a node that joins, so a new
node learns recent verdicts at once.  For anything older or lost, every
``resend_interval`` seconds each node re-sends the verdicts that keep an
address *unhealthy* on it, with their original stamp (``"t"`` in the payload):
receivers that already know them, or something newer, ignore them.  Healthy is
the default, so a healthy verdict is re-sent only for ``healthy_window`` seconds
after the node learned it (enough for a node that missed "healthy again" to take
the address back); after that every node has it or holds no verdict at all.
Only verdicts travel: each node counts its own traffic and probes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from kongtx.balancer.health_state import HealthState, Source
from kongtx.clock import Clock
from kongtx.log import logger

log = logger("kongtx.cluster.health_gossip")

EVENT_NAME = "kongtx-health"
#: seconds between two re-sends of the unhealthy verdicts a node holds
RESEND_INTERVAL = 30.0
#: seconds a healthy verdict keeps being re-sent after it was learned
HEALTHY_WINDOW = 300.0

#: ``send(name, payload) -> LTime``: ``Serf.user_event``
Send = Callable[[str, bytes], int]
#: (Lamport time, origin node) of a verdict
Stamp = tuple[int, str]


def encode(
    upstream_id: str, addr: str, healthy: bool, origin: str, ltime: int | None = None
) -> bytes:
    """The event payload: compact JSON (a user event has a 9 KiB limit).  ``ltime`` is
    the verdict's original stamp when re-sent; a first send is stamped by its event."""
    body: dict[str, Any] = {
        "upstream_id": upstream_id,
        "address": addr,
        "healthy": healthy,
        "node": origin,
    }
    if ltime is not None:
        body["t"] = ltime
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes) -> tuple[str, str, bool, str, int | None]:
    """``(upstream_id, address, healthy, origin, ltime or None)``; ValueError when malformed."""
    try:
        body: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # too deep
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(body, dict):
        raise ValueError("not an object")
    upstream_id, addr, healthy, origin, ltime = (
        body.get("upstream_id"),
        body.get("address"),
        body.get("healthy"),
        body.get("node"),
        body.get("t"),
    )
    if not (
        isinstance(upstream_id, str)
        and isinstance(addr, str)
        and isinstance(healthy, bool)
        and isinstance(origin, str)
        and (ltime is None or (isinstance(ltime, int) and not isinstance(ltime, bool)))
    ):
        raise ValueError("missing or mistyped fields")
    return upstream_id, addr, healthy, origin, ltime


class HealthGossip:
    """Publishes local health changes, applies the cluster's, re-sends what is down.

    Args:
        health: the node's table.
        node_name: this node's cluster name (the origin of its verdicts).
        send: ``Serf.user_event``.
        clock: runs the re-sends; None: no re-sends.
        resend_interval: seconds between two re-sends (0: none).
        healthy_window: seconds a healthy verdict is re-sent after it was learned.
    """

    def __init__(
        self,
        health: HealthState,
        node_name: str,
        send: Send,
        clock: Clock | None = None,
        resend_interval: float = RESEND_INTERVAL,
        healthy_window: float = HEALTHY_WINDOW,
    ) -> None:
        self.health = health
        self.node_name = node_name
        self.send = send
        self.clock = clock
        self.resend_interval = resend_interval
        self.healthy_window = healthy_window
        #: (upstream id, address) -> the stamp and verdict last applied or published
        self.verdicts: dict[tuple[str, str], tuple[Stamp, bool]] = {}
        #: (upstream id, address) -> when its current healthy verdict was learned
        self._healthy_since: dict[tuple[str, str], float] = {}
        #: upstream id -> the addresses ``verdicts`` holds for it (what :meth:`forget` drops)
        self._addresses: dict[str, set[str]] = {}
        self.published = 0
        self.resent = 0
        self.received = 0
        self.ignored = 0
        self._loop: Any = None

    def start(self) -> None:
        self.health.add_listener(self.changed)
        self.health.add_forget_listener(self.forget)
        if self.clock is not None and self.resend_interval > 0:
            self._loop = self.clock.looping_call(self.resend_interval, self.resend)

    def stop(self) -> None:
        self.health.remove_listener(self.changed)
        self.health.remove_forget_listener(self.forget)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def changed(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        """HealthState listener: publish every change not made by the cluster."""
        if source == "cluster":
            return
        ltime = self._send(encode(upstream_id, addr, healthy, self.node_name), addr)
        if ltime is not None:
            self.published += 1
            self._remember(upstream_id, addr, (ltime, self.node_name), healthy)

    def resend(self) -> None:
        """Re-send, with their original stamps, the verdicts keeping an address down here
        and the healthy verdicts learned within ``healthy_window``."""
        now = self.clock.seconds() if self.clock is not None else 0.0
        for key, ((ltime, origin), healthy) in list(self.verdicts.items()):
            upstream_id, addr = key
            if healthy != self.health.is_healthy(upstream_id, addr):
                continue  # something newer (or a deleted upstream) holds this address
            if healthy and now - self._healthy_since.get(key, now) > self.healthy_window:
                continue
            if self._send(encode(upstream_id, addr, healthy, origin, ltime), addr) is not None:
                self.resent += 1

    def forget(self, upstream_id: str, kept: AbstractSet[str] | None) -> None:
        """The node dropped the verdicts of a deleted upstream (``kept`` None) or of
        addresses no target resolves to now: so does this table, which would
        otherwise grow with every upstream and address ever gossiped about.  Every
        node drops the same ones after the same change, and a node re-sends only
        verdicts its own table still holds, so none comes back."""
        known = self._addresses.get(upstream_id)
        if not known:
            return
        gone = set(known) if kept is None else known - kept
        for addr in gone:
            self.verdicts.pop((upstream_id, addr), None)
            self._healthy_since.pop((upstream_id, addr), None)
        known -= gone
        if not known:
            del self._addresses[upstream_id]

    def on_event(self, payload: bytes, ltime: int) -> None:
        """A ``kongtx-health`` user event arrived (``ClusterService._on_user_event``)."""
        try:
            upstream_id, addr, healthy, origin, stamped = decode(payload)
        except ValueError as e:
            log.warn("ignored a malformed {event} event: {error}", event=EVENT_NAME, error=e)
            return
        stamp = (ltime if stamped is None else stamped, origin)
        known = self.verdicts.get((upstream_id, addr))
        if known is not None and stamp <= known[0]:
            self.ignored += 1  # our own echo, a re-send, or older than what we hold
            return
        self.received += 1
        self._remember(upstream_id, addr, stamp, healthy)
        self.health.set(upstream_id, addr, healthy, "cluster")

    def _send(self, payload: bytes, addr: str) -> int | None:
        try:
            return self.send(EVENT_NAME, payload)
        except Exception:
            log.failure("could not publish the health of {addr}", addr=addr)
            return None

    def _remember(self, upstream_id: str, addr: str, stamp: Stamp, healthy: bool) -> None:
        key = (upstream_id, addr)
        known = self.verdicts.get(key)
        if known is None or stamp > known[0]:
            self.verdicts[key] = (stamp, healthy)
            self._addresses.setdefault(upstream_id, set()).add(addr)
            if not healthy:
                self._healthy_since.pop(key, None)
            elif known is None or not known[1]:
                self._healthy_since[key] = self.clock.seconds() if self.clock is not None else 0.0
