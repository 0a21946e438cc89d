"""The Serf layer: Lamport clocks, intents, user events, queries, tags, push/pull state."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cluster import codec
from kongtx.cluster.queries import QUERY_ACK
from kongtx.cluster.serf import (
    JOIN,
    LEAVE,
    QUERY,
    QUERY_RESPONSE,
    STATUS_ALIVE,
    STATUS_LEAVING,
    STATUS_LEFT,
    USER_EVENT,
    LamportClock,
    decode_tags,
    encode_tags,
)
from tests.unit.test_cluster_swim import Net, alive_msg, make


class LamportTests(SynchronousTestCase):
    def test_witness_moves_past_seen_times_only(self) -> None:
        """Witnessing v ≥ now sets v+1; older values leave the clock alone."""
        c = LamportClock()
        self.assertEqual(c.time(), 1)
        c.witness(10)
        self.assertEqual(c.time(), 11)
        c.witness(3)
        self.assertEqual(c.time(), 11)


class TagTests(SynchronousTestCase):
    def test_tags_round_trip_and_legacy_role(self) -> None:
        """Tags encode as 0xff + msgpack map; a bare meta string is an old agent's role."""
        self.assertEqual(encode_tags({}), b"\xff\x80")
        self.assertEqual(decode_tags(encode_tags({"a": "b"})), {"a": "b"})
        self.assertEqual(decode_tags(b"web"), {"role": "web"})
        self.assertEqual(decode_tags(b""), {})


class SerfTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Net()
        self.ml, self.serf = make("a", 7000, self.clock, self.net)
        self.events: list[Any] = []
        self.serf.on_event = lambda *a: self.events.append(a)
        self.ml.handle_message(alive_msg("b", 1, 7001), ("127.0.0.1", 7001))

    def _user(self, kind: int, body: dict[str, Any]) -> None:
        self.ml.handle_message(bytes([codec.USER, kind]) + codec.pack(body), ("127.0.0.1", 7001))

    def test_user_events_deduplicated_and_regossiped(self) -> None:
        """A user event is delivered once, witnessed, and queued for re-gossip once."""
        body = {"LTime": 5, "Name": "kong", "Payload": b"{}", "CC": False}
        self._user(USER_EVENT, body)
        self._user(USER_EVENT, body)
        self.assertEqual(self.events, [("kong", b"{}", 5)])
        self.assertEqual(self.serf.event_clock.time(), 6)
        queued = [b for b in self.ml.broadcasts if b[0][:2] == bytes([codec.USER, USER_EVENT])]
        self.assertEqual(len(queued), 1)

    def test_too_old_events_dropped(self) -> None:
        """An event more than 512 behind the clock is dropped silently (as Serf does)."""
        self.serf.event_clock.witness(2000)
        self._user(USER_EVENT, {"LTime": 10, "Name": "kong", "Payload": b"x"})
        self.assertEqual(self.events, [])

    def test_originated_event_sent_at_once_and_not_redelivered(self) -> None:
        """Our own event goes straight to every live member; its echo is not delivered to us."""
        ltime = self.serf.user_event("kong", b"p")
        sent = [m for m in self.net.messages(("127.0.0.1", 7001)) if m[1] == USER_EVENT]
        self.assertEqual(len(sent), 1)
        self._user(USER_EVENT, {"LTime": ltime, "Name": "kong", "Payload": b"p"})
        self.assertEqual(self.events, [])

    def test_leave_intent_then_dead_is_left(self) -> None:
        """A leave intent newer than the status time marks leaving; the death then shows left."""
        self._user(JOIN, {"LTime": 3, "Node": "b"})
        self._user(LEAVE, {"LTime": 3, "Node": "b"})  # not newer: ignored
        self.assertEqual(self.serf.members["b"].status, STATUS_ALIVE)
        self._user(LEAVE, {"LTime": 4, "Node": "b"})
        self.assertEqual(self.serf.members["b"].status, STATUS_LEAVING)
        self.ml.dead("b", 1, "b")
        self.assertEqual(self.serf.members["b"].status, STATUS_LEFT)

    def test_leave_intent_about_us_is_refuted(self) -> None:
        """Someone saying we leave makes us broadcast a newer join intent."""
        self._user(LEAVE, {"LTime": 7, "Node": "a"})
        joins = [m for m in self.net.messages(("127.0.0.1", 7001)) if m[1] == JOIN]
        self.assertTrue(joins)
        self.assertGreater(codec.fields(codec.unpack(joins[-1][2:]))["LTime"], 7)

    def test_force_leave_of_a_failed_member(self) -> None:
        """broadcast_leave on a failed member turns it left and tells the others."""
        self.ml.dead("b", 1, "a")
        self.serf.broadcast_leave("b")
        self.assertEqual(self.serf.members["b"].status, STATUS_LEFT)

    def test_serf_ping_query_acked_and_answered(self) -> None:
        """``_serf_ping`` with the ack flag gets an ack and a response sent to Addr:Port."""
        self._user(
            QUERY,
            {
                "LTime": 2,
                "ID": 99,
                "Addr": socket.inet_aton("127.0.0.5"),
                "Port": 5000,
                "SourceNode": "go1",
                "Filters": None,
                "Flags": QUERY_ACK,
                "RelayFactor": 0,
                "Timeout": 10**9,
                "Name": "_serf_ping",
                "Payload": b"",
            },
        )
        replies = [
            codec.fields(codec.unpack(m[2:]))
            for m in self.net.messages(("127.0.0.5", 5000))
            if m[1] == QUERY_RESPONSE
        ]
        self.assertEqual(sorted(r["Flags"] for r in replies), [0, QUERY_ACK])
        self.assertTrue(all(r["ID"] == 99 and codec.text(r["From"]) == "a" for r in replies))

    def test_query_filtered_to_other_nodes_not_answered(self) -> None:
        """A node-name filter that excludes us means no ack and no response."""
        names = bytes([0]) + codec.pack(["someone-else"])
        self._user(
            QUERY,
            {
                "LTime": 2,
                "ID": 1,
                "Addr": socket.inet_aton("127.0.0.5"),
                "Port": 5000,
                "Filters": [names],
                "Flags": QUERY_ACK,
                "Name": "_serf_ping",
            },
        )
        self.assertEqual(self.net.messages(("127.0.0.5", 5000)), [])

    def test_push_pull_user_state_merges_clocks_intents_and_events(self) -> None:
        """Remote serf state raises our clocks, records left members and replays buffered events."""
        other_ml, other = make("z", 7100, self.clock, Net())
        other.event_clock.witness(40)
        other.members["b"] = other.members["z"].__class__(
            "b", "127.0.0.1", 7001, status=STATUS_LEFT
        )
        other.members["b"].status_ltime = 9
        other._remember(41, "kong", b"buffered")
        self.serf.merge_remote_state(other.local_state(False), join=False)
        self.assertGreaterEqual(self.serf.event_clock.time(), 41)
        self.assertEqual(self.serf.members["b"].status, STATUS_LEAVING)
        self.assertIn(("kong", b"buffered", 41), self.events)


class OriginatedQueryTests(SynchronousTestCase):
    """Queries kongtx sends itself (``serf reachability`` through a kongtx node)."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Net()
        self.ml, self.serf = make("a", 7000, self.clock, self.net)
        self.ml.handle_message(alive_msg("b", 1, 7001), ("127.0.0.1", 7001))
        self.records: list[tuple[str, str, bytes]] = []

    def test_acks_and_responses_are_collected_until_the_timeout(self) -> None:
        """We ack ourselves, hear b's ack and answer, ignore repeats and anything after the timeout."""
        from kongtx.cluster import queries

        done = queries.originate(
            self.serf, "_serf_ping", b"", lambda *r: self.records.append(r), timeout=2.0
        )
        (sent,) = [m for m in self.net.messages(("127.0.0.1", 7001)) if m[1] == QUERY]
        q = codec.fields(codec.unpack(sent[2:]))
        self.assertEqual(
            (codec.text(q["Name"]), q["Port"], q["Flags"]), ("_serf_ping", 7000, QUERY_ACK)
        )
        base = {"LTime": q["LTime"], "ID": q["ID"], "From": "b"}
        for flags in (QUERY_ACK, QUERY_ACK, 0):
            self.ml.handle_message(
                bytes([codec.USER, QUERY_RESPONSE])
                + codec.pack({**base, "Flags": flags, "Payload": b""}),
                ("127.0.0.1", 7001),
            )
        self.assertNoResult(done)
        self.clock.advance(2.0)
        self.successResultOf(done)
        self.ml.handle_message(
            bytes([codec.USER, QUERY_RESPONSE])
            + codec.pack({**base, "From": "late", "Flags": QUERY_ACK}),
            ("127.0.0.1", 7001),
        )
        self.assertEqual(
            self.records,
            [("ack", "a", b""), ("response", "a", b""), ("ack", "b", b""), ("response", "b", b"")],
        )

    def test_default_timeout_follows_serf(self) -> None:
        """Timeout = gossip interval × 16 × ⌈log10(n+1)⌉."""
        from kongtx.cluster import queries

        self.assertAlmostEqual(queries.default_timeout(self.serf), 0.1 * 16 * 1)


class IntentBufferTests(SynchronousTestCase):
    def test_intents_for_unknown_nodes_wait_and_are_bounded(self) -> None:
        """A leave intent that precedes the member is applied when it appears; made-up names are capped."""
        from kongtx.cluster.serf import MAX_INTENTS

        ml, serf = make("a", 7000, task.Clock(), Net())
        self.assertTrue(serf.leave_intent(5, "later"))
        ml.handle_message(alive_msg("later", 1, 7009), ("127.0.0.1", 7009))
        self.assertEqual(serf.members["later"].status, STATUS_LEAVING)
        for i in range(MAX_INTENTS + 50):
            serf.join_intent(1, f"ghost-{i}")
        self.assertEqual(len(serf._intents), MAX_INTENTS)
