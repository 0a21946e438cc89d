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
        for payload in (
            b"\xff",
            b"[]",
            b'{"upstream_id": 1}',
            b"{",
            encode(UID, ADDR, True, "n")[:-1] + b',"t":"x"}',
            b"[" * 9000,  # within a user event's 9 KiB, too deep for json: RecursionError
        ):
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


class ResendTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.clock = Clock(self.reactor)
        self.bus = Bus()
        self.bus.time = 100
        self.health = HealthState()
        self.gossip = HealthGossip(self.health, "node-1", self.bus.send, self.clock, 30)
        self.gossip.start()
        self.addCleanup(self.gossip.stop)

    def remote(self, healthy: bool, ltime: int, node: str = "node-2", addr: str = ADDR) -> None:
        self.gossip.on_event(encode(UID, addr, healthy, node), ltime)

    def test_unhealthy_verdicts_are_resent_with_their_original_stamp(self) -> None:
        """Every resend_interval the verdicts keeping an address down are sent again, each
        with its first stamp; a healthy one only within the healthy window."""
        self.gossip.on_event(encode(UID, ADDR, False, "node-2"), 40)
        self.health.set(UID, "10.0.0.3:1", False, "active")  # published at LTime 100
        self.health.set(UID, "10.0.0.4:1", False, "active")
        self.health.set(UID, "10.0.0.4:1", True, "manual")  # published at LTime 102
        sent = len(self.bus.sent)
        self.reactor.advance(30)
        stamps = {
            json.loads(p)["address"]: (
                json.loads(p)["t"],
                json.loads(p)["node"],
                json.loads(p)["healthy"],
            )
            for _, p, _ in self.bus.sent[sent:]
        }
        assert stamps == {
            ADDR: (40, "node-2", False),
            "10.0.0.3:1": (100, "node-1", False),
            "10.0.0.4:1": (102, "node-1", True),
        }
        self.reactor.advance(self.gossip.healthy_window)  # the healthy verdict is old now
        sent = len(self.bus.sent)
        self.reactor.advance(30)
        resent = sorted(json.loads(p)["address"] for _, p, _ in self.bus.sent[sent:])
        assert resent == [ADDR, "10.0.0.3:1"]
        self.health.forget(UID)  # deleted upstream: nothing more to re-send
        sent = len(self.bus.sent)
        self.reactor.advance(30)
        assert self.bus.sent[sent:] == []

    def test_a_late_joiner_takes_a_resend_but_never_over_a_newer_verdict(self) -> None:
        """A re-sent verdict is applied by a node that missed it and ignored by one that
        holds a newer verdict (or the same one)."""
        late = HealthState()
        late_gossip = HealthGossip(late, "node-9", self.bus.send)
        late_gossip.start()
        resend = encode(UID, ADDR, False, "node-2", 40)
        late_gossip.on_event(resend, 500)  # the Serf LTime of the re-send does not count
        assert not late.is_healthy(UID, ADDR)
        assert late_gossip.verdicts[(UID, ADDR)] == ((40, "node-2"), False)
        late_gossip.on_event(encode(UID, ADDR, True, "node-3"), 41)  # newer: applied
        assert late.is_healthy(UID, ADDR)
        late_gossip.on_event(resend, 501)  # the old verdict again: ignored
        assert late.is_healthy(UID, ADDR)
        late_gossip.stop()

    def test_a_node_that_missed_healthy_again_takes_it_from_a_resend(self) -> None:
        """The "healthy again" was lost on the way to one node: the next re-send of the
        node that made it brings the address back there."""
        missed = HealthState()
        missed_gossip = HealthGossip(missed, "node-9", self.bus.send)
        missed_gossip.start()
        self.health.set(UID, ADDR, False, "passive")
        missed_gossip.on_event(*self.bus.sent[-1][1:])
        assert not missed.is_healthy(UID, ADDR)
        self.health.set(UID, ADDR, True, "manual")  # this event never reaches node-9
        sent = len(self.bus.sent)
        self.reactor.advance(30)
        for _, payload, ltime in self.bus.sent[sent:]:
            missed_gossip.on_event(payload, ltime)
        assert missed.is_healthy(UID, ADDR)
        missed_gossip.stop()

    def test_verdicts_of_a_deleted_upstream_are_forgotten(self) -> None:
        """Deleting an upstream empties its part of the stamp table (it would otherwise
        grow with every upstream ever gossiped about); other upstreams keep theirs, and
        a verdict arriving later is taken as new."""
        other = "6f2a5a8e-1111-4c6a-9f6e-000000000002"
        self.remote(False, 5)
        self.remote(True, 6, addr="10.0.0.3:8080")
        self.gossip.on_event(encode(other, ADDR, False, "node-2"), 7)
        self.health.forget(UID)
        assert set(self.gossip.verdicts) == {(other, ADDR)}
        self.remote(False, 2)  # an older stamp, but nothing is held for it any more
        assert not self.health.is_healthy(UID, ADDR)

    def test_verdicts_of_addresses_no_target_resolves_to_are_dropped(self) -> None:
        """HealthState.retain (a target removed or re-resolved) drops the stamps of the
        addresses not kept, healthy or not, and nothing else; the re-sends skip them."""
        self.remote(False, 5)
        self.remote(True, 6, addr="10.0.0.3:8080")
        self.remote(False, 7, addr="10.0.0.4:8080")
        self.health.retain(UID, {"10.0.0.4:8080"})
        assert set(self.gossip.verdicts) == {(UID, "10.0.0.4:8080")}
        assert self.health.is_healthy(UID, ADDR)
        sent = len(self.bus.sent)
        self.gossip.resend()
        assert [json.loads(p)["address"] for _, p, _ in self.bus.sent[sent:]] == ["10.0.0.4:8080"]

    def test_stop_stops_the_resends(self) -> None:
        """No timer is left after stop."""
        self.gossip.stop()
        assert self.clock.pending == 0


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
        assert gossip.verdicts[(UID, ADDR)] == ((9, "b"), False)
        health.set(UID, ADDR, True, "manual")  # published with a later Lamport time
        assert gossip.verdicts[(UID, ADDR)][0][0] > 9
        assert svc.serf.user_event_received(9, "other", b"x")  # unknown names: ignored
        clock.cancel_all()
