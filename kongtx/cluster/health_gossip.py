# -*- test-case-name: tests.unit.test_health_gossip -*-
"""Target health shared by every node: the ``kongtx-health`` Serf user event.

Kong 1.x kept health per node (each worker even, until it shared them over
shm): a target one node found dead kept receiving traffic from every other
node until each found out by itself.  Here every change of the node's
:class:`~kongtx.balancer.health_state.HealthState` that did not come from the
cluster (active probe, passive counter, ``POST .../healthy|unhealthy``) is
published as one small user event, and every node applies the events it
receives with ``source="cluster"``, so they are not published again.

Ordering: two nodes may change the same address at about the same time.
Each event carries Serf's Lamport time (LTime); per (upstream id, address) a
node keeps the (LTime, origin) of the last verdict it applied or published
and ignores anything not newer, so a late or replayed event never undoes a
later one, and every node settles on the same last verdict (ties broken by
origin name).  A node's own events come back to it through gossip and are
ignored.

Not shared: the counters behind a verdict (each node counts its own traffic
and probes), and the past: a node that joins later starts with every address
healthy and learns only the changes made after it joined (docs/clustering.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kongtx.balancer.health_state import HealthState, Source
from kongtx.log import logger

log = logger("kongtx.cluster.health_gossip")

EVENT_NAME = "kongtx-health"

#: ``send(name, payload) -> LTime``: ``Serf.user_event``
Send = Callable[[str, bytes], int]


def encode(upstream_id: str, addr: str, healthy: bool, origin: str) -> bytes:
    """The event payload: compact JSON (a user event has a 9 KiB limit)."""
    body = {"upstream_id": upstream_id, "address": addr, "healthy": healthy, "node": origin}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes) -> tuple[str, str, bool, str]:
    """``(upstream_id, address, healthy, origin)``; ValueError when malformed."""
    try:
        body: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(body, dict):
        raise ValueError("not an object")
    upstream_id, addr, healthy, origin = (
        body.get("upstream_id"),
        body.get("address"),
        body.get("healthy"),
        body.get("node"),
    )
    if not (
        isinstance(upstream_id, str)
        and isinstance(addr, str)
        and isinstance(healthy, bool)
        and isinstance(origin, str)
    ):
        raise ValueError("missing or mistyped fields")
    return upstream_id, addr, healthy, origin


class HealthGossip:
    """Publishes local health changes and applies the cluster's."""

    def __init__(self, health: HealthState, node_name: str, send: Send) -> None:
        self.health = health
        self.node_name = node_name
        self.send = send
        #: (upstream id, address) -> (LTime, origin) of the last verdict applied or sent
        self.applied: dict[tuple[str, str], tuple[int, str]] = {}
        self.published = 0
        self.received = 0
        self.ignored = 0

    def start(self) -> None:
        self.health.add_listener(self.changed)

    def stop(self) -> None:
        self.health.remove_listener(self.changed)

    def changed(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        """HealthState listener: publish every change not made by the cluster."""
        if source == "cluster":
            return
        try:
            ltime = self.send(EVENT_NAME, encode(upstream_id, addr, healthy, self.node_name))
        except Exception:
            log.failure("could not publish a health change of {addr}", addr=addr)
            return
        self.published += 1
        self._remember(upstream_id, addr, (ltime, self.node_name))

    def on_event(self, payload: bytes, ltime: int) -> None:
        """A ``kongtx-health`` user event arrived (``ClusterService._on_user_event``)."""
        try:
            upstream_id, addr, healthy, origin = decode(payload)
        except ValueError as e:
            log.warn("ignored a malformed {event} event: {error}", event=EVENT_NAME, error=e)
            return
        if origin == self.node_name:
            return  # our own, back through gossip
        stamp = (ltime, origin)
        previous = self.applied.get((upstream_id, addr))
        if previous is not None and stamp <= previous:
            self.ignored += 1
            return
        self.received += 1
        self._remember(upstream_id, addr, stamp)
        self.health.set(upstream_id, addr, healthy, "cluster")

    def _remember(self, upstream_id: str, addr: str, stamp: tuple[int, str]) -> None:
        key = (upstream_id, addr)
        previous = self.applied.get(key)
        if previous is None or stamp > previous:
            self.applied[key] = stamp
