"""SWIM state machine (kongtx.cluster.memberlist) on task.Clock with a fake datagram transport."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.cluster import codec, transport
from kongtx.cluster.memberlist import (
    ALIVE,
    DEAD,
    LEFT,
    PROFILES,
    SUSPECT,
    Memberlist,
    retransmit_limit,
    suspicion_timeout,
)
from kongtx.cluster.serf import STATUS_FAILED, STATUS_LEFT, Serf

LOCAL = PROFILES["local"]


class Net:
    """A fake network: every datagram sent is recorded; ``deliver`` hands them over."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def messages(self, to: tuple[str, int] | None = None) -> list[bytes]:
        out = []
        for data, addr in self.sent:
            if to is None or addr == to:
                out += codec.open_packet(data, [])
        return out

    def kinds(self, to: tuple[str, int] | None = None) -> list[int]:
        return [m[0] for m in self.messages(to)]


def make(name: str, port: int, clock: task.Clock, net: Net) -> tuple[Memberlist, Serf]:
    events: list[Any] = []
    serf = Serf(name, {"role": "kong"}, Clock(clock), lambda *a: events.append(a))

    async def push_pull(addr: tuple[str, int], request: bytes) -> Any:
        raise ConnectionError("no TCP in unit tests")

    ml = Memberlist(name, ("127.0.0.1", port), LOCAL, Clock(clock), net.send, push_pull, serf)
    serf.attach(ml)
    return ml, serf


def alive_msg(name: str, inc: int, port: int) -> bytes:
    return codec.encode(
        codec.ALIVE,
        {
            "Incarnation": inc,
            "Node": name,
            "Addr": socket.inet_aton("127.0.0.1"),
            "Port": port,
            "Meta": b"\xff\x80",
            "Vsn": codec.VSN,
        },
    )


class SwimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Net()
        self.ml, self.serf = make("a", 7000, self.clock, self.net)
        self.ml.handle_message(alive_msg("b", 1, 7001), ("127.0.0.1", 7001))
        self.ml.handle_message(alive_msg("c", 1, 7002), ("127.0.0.1", 7002))

    def test_ping_is_acked_to_its_source(self) -> None:
        """A ping naming us is answered with an ack of the same SeqNo at SourceAddr:SourcePort."""
        ping = codec.encode(
            codec.PING,
            {
                "SeqNo": 42,
                "Node": "a",
                "SourceAddr": socket.inet_aton("127.0.0.9"),
                "SourcePort": 9,
            },
        )
        self.ml.handle_message(ping, ("127.0.0.1", 5555))
        data, addr = self.net.sent[-1]
        self.assertEqual(addr, ("127.0.0.9", 9))
        ack = codec.fields(codec.unpack(data[1:]))
        self.assertEqual((data[0], ack["SeqNo"]), (codec.ACK, 42))

    def test_ping_for_another_node_is_ignored(self) -> None:
        """memberlist drops pings addressed to a different node name."""
        self.ml.handle_message(codec.encode(codec.PING, {"SeqNo": 1, "Node": "zz"}), ("h", 1))
        self.assertEqual(self.net.sent, [])

    def test_probe_without_ack_goes_indirect_then_suspect_then_dead(self) -> None:
        """No ack: indirect ping after the probe timeout, suspect after the interval, failed later."""
        self.ml.probe_order = ["b"]
        d = Deferred.fromCoroutine(self.ml.probe())
        self.assertEqual(self.net.kinds(("127.0.0.1", 7001))[0], codec.PING)
        self.clock.advance(LOCAL.probe_timeout)
        self.assertIn(codec.INDIRECT_PING, self.net.kinds(("127.0.0.1", 7002)))
        self.clock.advance(LOCAL.probe_interval)
        self.successResultOf(d)
        self.assertEqual(self.ml.members["b"].state, SUSPECT)
        self.clock.advance(suspicion_timeout(LOCAL.suspicion_mult, 3, LOCAL.probe_interval))
        self.assertEqual(self.ml.members["b"].state, DEAD)
        self.assertEqual(self.serf.members["b"].status, STATUS_FAILED)

    def test_ack_keeps_the_member_alive(self) -> None:
        """An ack for the probe's SeqNo ends the probe with the member still alive."""
        self.ml.probe_order = ["b"]
        d = Deferred.fromCoroutine(self.ml.probe())
        ping = codec.fields(codec.unpack(self.net.messages(("127.0.0.1", 7001))[0][1:]))
        self.ml.handle_message(
            codec.encode(codec.ACK, {"SeqNo": ping["SeqNo"]}), ("127.0.0.1", 7001)
        )
        self.successResultOf(d)
        self.clock.advance(10)
        self.assertEqual(self.ml.members["b"].state, ALIVE)
        self.assertEqual(self.clock.getDelayedCalls().__len__(), 0)

    def test_suspicion_refuted_by_a_newer_alive(self) -> None:
        """A suspect that sends alive with a higher incarnation is alive again, timer cancelled."""
        self.ml.suspect("b", 1, "c")
        self.ml.handle_message(alive_msg("b", 2, 7001), ("127.0.0.1", 7001))
        self.assertEqual(self.ml.members["b"].state, ALIVE)
        self.clock.advance(60)
        self.assertEqual(self.ml.members["b"].state, ALIVE)

    def test_we_refute_suspicion_and_death(self) -> None:
        """Suspect or dead about ourselves raises our incarnation and queues an alive."""
        self.ml.handle_message(
            codec.encode(codec.SUSPECT, {"Incarnation": 5, "Node": "a", "From": "b"}), ("h", 1)
        )
        self.assertEqual(self.ml.me.incarnation, 6)
        self.ml.dead("a", 9, "b")
        self.assertEqual(self.ml.me.incarnation, 10)
        queued = [
            codec.fields(codec.unpack(b[0][1:]))
            for b in self.ml.broadcasts
            if b[0][0] == codec.ALIVE
        ]
        self.assertIn(10, [q["Incarnation"] for q in queued if codec.text(q["Node"]) == "a"])

    def test_stale_alive_ignored(self) -> None:
        """An alive with an older incarnation changes nothing."""
        self.ml.handle_message(alive_msg("b", 3, 7001), ("h", 1))
        self.ml.handle_message(alive_msg("b", 2, 7009), ("h", 1))
        self.assertEqual(self.ml.members["b"].port, 7001)

    def test_voluntary_leave_is_left(self) -> None:
        """dead with From == Node means left, and serf shows it as left."""
        self.ml.dead("c", 1, "c")
        self.assertEqual(self.ml.members["c"].state, LEFT)
        self.assertEqual(self.serf.members["c"].status, STATUS_LEFT)

    def test_broadcasts_are_transmit_limited(self) -> None:
        """A broadcast piggybacks on at most mult × ⌈log10(n+1)⌉ packets."""
        self.ml.broadcasts.clear()
        self.ml.queue(b"\x08\x03x")
        limit = retransmit_limit(LOCAL.retransmit_mult, 3)
        for _ in range(limit + 3):
            self.ml.gossip()
        sent = [m for m in self.net.messages() if m == b"\x08\x03x"]
        self.assertEqual(len(sent), limit)

    def test_oversized_broadcast_travels_alone(self) -> None:
        """A broadcast bigger than one UDP buffer is still gossiped, in its own datagram."""
        self.ml.broadcasts.clear()
        big = b"\x08\x03" + b"x" * 3000
        self.ml.queue(big)
        self.ml.queue(b"\x08\x03small")
        self.ml.gossip()
        packets = [data for data, _ in self.net.sent]
        self.assertIn(big, packets)
        self.assertIn(b"\x08\x03small", self.net.messages())

    def test_queue_is_bounded_when_nobody_listens(self) -> None:
        """Alone, a node keeps at most MAX_QUEUE broadcasts (the newest)."""
        from kongtx.cluster.memberlist import MAX_QUEUE

        alone, _ = make("z", 7100, self.clock, Net())
        for i in range(MAX_QUEUE + 10):
            alone.queue(b"\x08\x03" + str(i).encode())
        self.assertEqual(len(alone.broadcasts), MAX_QUEUE)
        self.assertEqual(alone.broadcasts[-1][0], b"\x08\x03" + str(MAX_QUEUE + 9).encode())

    def test_push_pull_state_round_trip(self) -> None:
        """Our push/pull state, parsed as a stream, teaches another node every member and tag."""
        other, other_serf = make("z", 7100, self.clock, Net())
        found = transport.parse_stream(self.ml.local_state(join=True), [])
        assert found is not None
        (kind, body), _ = found
        other.merge_state(body, join=True)
        self.assertEqual(set(other.members), {"a", "b", "c", "z"})
        self.assertEqual(other_serf.members["a"].tags, {"role": "kong"})

    def test_malformed_datagram_dropped_and_counted(self) -> None:
        """Garbage never raises out of datagramReceived; it is counted."""
        proto = transport.GossipDatagram(lambda d, a: self.ml.handle_packet(d, a, []))
        proto.datagramReceived(b"\x07\x09\x00", ("127.0.0.1", 1))
        proto.datagramReceived(b"\x04\xc1", ("127.0.0.1", 1))
        proto.datagramReceived(b"\x63", ("127.0.0.1", 1))
        self.assertEqual(proto.dropped, 3)

    def test_pending_ack_times_out_on_the_clock(self) -> None:
        """expect() fails after its timeout and forgets the request id."""
        d = self.ml.expect(77, 0.5)
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.failureResultOf(d)
        self.assertNotIn(77, self.ml.pending)


class AwarenessTests(SynchronousTestCase):
    """Lifeguard's local health: a node that may itself be slow waits longer before accusing."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Net()
        self.ml, _ = make("a", 7000, self.clock, self.net)
        for name, port in (("b", 7001), ("c", 7002)):
            self.ml.handle_message(alive_msg(name, 1, port), ("127.0.0.1", port))

    def _failed_probe(self, nack: bool) -> None:
        self.ml.probe_order = ["b"]
        d = Deferred.fromCoroutine(self.ml.probe())
        scale = self.ml.awareness + 1
        self.clock.advance(LOCAL.probe_timeout * scale)
        if nack:
            seq = max(self.ml.pending)
            self.ml.handle_message(codec.encode(codec.NACK, {"SeqNo": seq}), ("127.0.0.1", 7002))
        self.clock.advance(LOCAL.probe_interval * scale)
        self.successResultOf(d)

    def test_unanswered_indirect_probe_raises_awareness(self) -> None:
        """No ack and no nack from the helper: we may be the slow one, so awareness rises."""
        self._failed_probe(nack=False)
        self.assertEqual(self.ml.awareness, 1)

    def test_nack_means_the_target_is_down_not_us(self) -> None:
        """A helper's nack proves our own links work: no awareness penalty."""
        self._failed_probe(nack=True)
        self.assertEqual(self.ml.awareness, 0)

    def test_refuting_raises_and_success_lowers_awareness(self) -> None:
        """Having to refute an accusation raises awareness; a successful probe lowers it again."""
        self.ml.suspect("a", 1, "b")
        self.assertEqual(self.ml.awareness, 1)
        self.ml.probe_order = ["c"]
        d = Deferred.fromCoroutine(self.ml.probe())
        seq = max(self.ml.pending)
        self.ml.handle_message(codec.encode(codec.ACK, {"SeqNo": seq}), ("127.0.0.1", 7002))
        self.successResultOf(d)
        self.assertEqual(self.ml.awareness, 0)

    def test_awareness_scales_the_probe_deadline(self) -> None:
        """With awareness 2 the probe waits three times the interval before suspecting."""
        self.ml.awareness = 2
        self.ml.probe_order = ["b"]
        d = Deferred.fromCoroutine(self.ml.probe())
        self.clock.advance(LOCAL.probe_interval * 2.5)
        self.assertNoResult(d)
        self.assertEqual(self.ml.members["b"].state, ALIVE)
        self.clock.advance(LOCAL.probe_interval)
        self.successResultOf(d)
        self.assertEqual(self.ml.members["b"].state, SUSPECT)
