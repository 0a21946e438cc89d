"""kongtx-health gossip: local changes published, remote ones applied in LTime order."""

from __future__ import annotations

import dataclasses
import json

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kongtx.balancer.health_state import HealthState
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.cluster.health_gossip import EVENT_NAME, HealthGossip, decode, encode
from kongtx.cluster.serf import USER_EVENT_LIMIT
from kongtx.cluster.service import ClusterService
from kongtx.config import Address, Config
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

UID = "6f2a5a8e-1111-4c6a-9f6e-000000000001"
ADDR = "10.0.0.2:8080"


class Bus:
    """Serf's ``user_event``: a Lamport clock and the events sent."""

    def __init__(self) -> None:
        self.time = 0
        self.sent: list[tuple[str, bytes, int]] = []

    def send(self, name: str, payload: bytes) -> int:
        ltime = self.time
        self.time += 1
        self.sent.append((name, payload, ltime))
        return ltime


class GossipTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.health = HealthState()
        self.bus = Bus()
        self.gossip = HealthGossip(self.health, "node-1", self.bus.send)
        self.gossip.start()
        self.addCleanup(self.gossip.stop)

    def remote(self, healthy: bool, ltime: int, node: str = "node-2", addr: str = ADDR) -> None:
        self.gossip.on_event(encode(UID, addr, healthy, node), ltime)

    def test_local_changes_are_published_small(self) -> None:
        """Active, passive and manual changes go out as one small kongtx-health event."""
        self.health.set(UID, ADDR, False, "passive")
        self.health.set(UID, ADDR, True, "manual")
        self.health.set(UID, ADDR, True, "active")  # no change: nothing sent
        assert [(n, json.loads(p)) for n, p, _ in self.bus.sent] == [
            (EVENT_NAME, {"upstream_id": UID, "address": ADDR, "healthy": False, "node": "node-1"}),
            (EVENT_NAME, {"upstream_id": UID, "address": ADDR, "healthy": True, "node": "node-1"}),
        ]
        payload = self.bus.sent[0][1]
        assert len(payload) + len(EVENT_NAME) < 200 < USER_EVENT_LIMIT

    def test_remote_changes_are_applied_as_cluster_and_not_echoed(self) -> None:
        """A received event sets the address with source cluster and is not republished."""
        heard: list[tuple[bool, str]] = []
        self.health.add_listener(lambda u, a, h, s: heard.append((h, s)))
        self.remote(False, 5)
        assert not self.health.is_healthy(UID, ADDR)
        assert heard == [(False, "cluster")]
        assert self.bus.sent == []

    def test_own_echo_is_ignored(self) -> None:
        """Our own event coming back through gossip changes nothing."""
        self.health.set(UID, ADDR, False, "manual")
        name, payload, ltime = self.bus.sent[0]
        self.health.set(UID, ADDR, True, "manual")
        self.gossip.on_event(payload, ltime)
        assert self.health.is_healthy(UID, ADDR)

    def test_older_events_never_undo_newer_ones(self) -> None:
        """Per address, an event with an older LTime than the one applied is ignored."""
        self.remote(False, 10)
        self.remote(True, 7, node="node-3")  # late delivery of an older verdict
        assert not self.health.is_healthy(UID, ADDR)
        assert self.gossip.ignored == 1
        self.remote(True, 11, node="node-3")
        assert self.health.is_healthy(UID, ADDR)
        self.remote(False, 3, addr="10.0.0.9:1")  # another address has its own order
        assert not self.health.is_healthy(UID, "10.0.0.9:1")

    def test_older_remote_event_loses_to_a_newer_local_change(self) -> None:
        """A local change stamped with a later LTime wins over a late remote event."""
        self.bus.time = 20
        self.health.set(UID, ADDR, True, "manual")  # nothing to publish: already healthy
        self.health.set(UID, ADDR, False, "manual")  # published at LTime 20
        self.remote(True, 15)
        assert not self.health.is_healthy(UID, ADDR)
        self.remote(True, 21)
        assert self.health.is_healthy(UID, ADDR)

    def test_equal_ltimes_break_ties_by_origin(self) -> None:
        """Concurrent events with one LTime: every node keeps the same one (origin order)."""
        self.remote(False, 4, node="node-3")
        self.remote(True, 4, node="node-2")
        assert not self.health.is_healthy(UID, ADDR)
        self.remote(True, 4, node="node-4")
        assert self.health.is_healthy(UID, ADDR)

    def test_malformed_events_are_dropped(self) -> None:
        """Garbage payloads are logged and ignored."""
        for payload in (b"\xff", b"[]", b'{"upstream_id": 1}', b"{"):
            self.gossip.on_event(payload, 1)
        assert self.health.unhealthy(UID) == frozenset()
        with self.assertRaises(ValueError):
            decode(b'{"upstream_id":"u","address":"a","healthy":"no","node":"n"}')

    def test_a_failing_send_does_not_break_the_change(self) -> None:
        """When the event cannot be sent the local verdict still stands."""

        def broken(name: str, payload: bytes) -> int:
            raise ValueError("user event exceeds the limit")

        self.gossip.send = broken
        self.health.set(UID, ADDR, False, "active")
        assert not self.health.is_healthy(UID, ADDR)
        assert self.gossip.published == 0
        self.flushLoggedErrors(ValueError)

    def test_two_nodes_converge_through_a_shared_bus(self) -> None:
        """Two gossips wired to each other: a change on one reaches the other, once."""
        other_health = HealthState()
        other = HealthGossip(other_health, "node-2", self.bus.send)
        other.start()
        self.health.set(UID, ADDR, False, "passive")
        for _, payload, ltime in list(self.bus.sent):
            other.on_event(payload, ltime)
            self.gossip.on_event(payload, ltime)
        assert not other_health.is_healthy(UID, ADDR)
        assert len(self.bus.sent) == 1  # the receiver did not republish
        other_health.set(UID, ADDR, True, "manual")
        for _, payload, ltime in self.bus.sent[1:]:
            self.gossip.on_event(payload, ltime)
        assert self.health.is_healthy(UID, ADDR)
        other.stop()


class ClusterDispatchTests(SynchronousTestCase):
    def test_cluster_service_hands_kongtx_health_events_to_the_gossip(self) -> None:
        """A kongtx-health user event received by Serf reaches HealthGossip with its LTime;
        the node's own ``send`` goes out as a Serf user event of that name."""
        reactor = MemoryReactorClock()
        clock = Clock(reactor)
        cfg = dataclasses.replace(
            Config(),
            cluster_listen=Address("127.0.0.1", 7000),
            cluster_profile="local",
        )
        svc = ClusterService(
            cfg, MemoryStore(TABLES, "a", clock), None, Cache(clock), clock, reactor, "a"
        )
        health = HealthState()
        gossip = HealthGossip(health, "a", svc.serf.user_event)
        svc.user_event_handlers[EVENT_NAME] = gossip.on_event
        gossip.start()
        assert svc.serf.user_event_received(9, EVENT_NAME, encode(UID, ADDR, False, "b"))
        assert not health.is_healthy(UID, ADDR)
        assert gossip.applied[(UID, ADDR)] == (9, "b")
        health.set(UID, ADDR, True, "manual")  # published with a later Lamport time
        assert gossip.applied[(UID, ADDR)][0] > 9
        assert svc.serf.user_event_received(9, "other", b"x")  # unknown names: ignored
        clock.cancel_all()
