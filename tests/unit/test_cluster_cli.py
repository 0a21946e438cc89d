"""``kong cluster`` functions and the node's RPC protocol (StringTransport, no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cluster import cli
from kongtx.cluster.rpc import RPCProtocol


class FakeCluster:
    """Answers like ClusterService, records what was asked."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    def members(self) -> list[dict[str, str]]:
        return [{"name": "n1", "address": "10.0.0.1:7946", "status": "alive"}]

    async def reachability(self) -> dict[str, Any]:
        return {"members": 2, "live": 2, "failed": ["n2"]}

    async def join(self, address: str) -> None:
        self.asked.append(("join", address))

    async def force_leave(self, name: str) -> None:
        if name == "ghost":
            raise ValueError("Error force leaving: node ghost is not a member")
        self.asked.append(("force-leave", name))


class RPCTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = FakeCluster()
        self.proto = RPCProtocol(self.cluster)  # type: ignore[arg-type]
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def ask(self, request: Any) -> Any:
        self.transport.clear()
        self.proto.dataReceived(json.dumps(request).encode() + b"\n")
        return json.loads(self.transport.value())

    def test_members_and_join(self) -> None:
        """members answers the cluster's rows; join passes the address on."""
        self.assertEqual(self.ask({"command": "members"})["result"][0]["name"], "n1")
        self.assertTrue(self.ask({"command": "join", "address": "1.2.3.4:7946"})["ok"])
        self.assertEqual(self.cluster.asked, [("join", "1.2.3.4:7946")])

    def test_errors_are_answers_not_crashes(self) -> None:
        """Unknown commands, bad JSON and refused operations come back as ok=false."""
        self.assertEqual(self.ask({"command": "nope"})["ok"], False)
        self.assertIn("ghost", self.ask({"command": "force-leave", "name": "ghost"})["error"])
        self.transport.clear()
        self.proto.dataReceived(b"{not json\n")
        self.assertFalse(json.loads(self.transport.value())["ok"])


class CliTests(SynchronousTestCase):
    def test_members_lines(self) -> None:
        """One tab-separated line per member, as Kong printed them."""
        lines = cli.members(lambda r: FakeCluster().members())
        self.assertEqual(lines, ["n1\t10.0.0.1:7946\talive"])

    def test_reachability_report(self) -> None:
        """All acked: serf's success line; a failure names the silent node and fails."""
        ok, good = cli.reachability(lambda r: {"members": 1, "live": 1, "failed": []})
        self.assertEqual(ok[-1], "Successfully contacted all live nodes")
        self.assertTrue(good)
        bad, good = cli.reachability(lambda r: {"members": 3, "live": 3, "failed": ["n2"]})
        self.assertFalse(good)
        self.assertEqual(bad[0], "Total members: 3, live members: 3")
        self.assertIn("\tn2", bad)

    def test_force_leave_wording_and_missing_node(self) -> None:
        """Kong's force-leaving/left lines; no node is an error."""
        asked: list[Any] = []
        self.assertEqual(cli.force_leave(asked.append, "n2"), ["force-leaving n2", "left node n2"])
        self.assertEqual(asked, [{"command": "force-leave", "name": "n2"}])
        with self.assertRaises(cli.ClusterCliError):
            cli.force_leave(asked.append, "")

    def test_keygen_is_a_16_byte_key(self) -> None:
        """keygen prints base64 of 16 random bytes."""
        (key,) = cli.keygen()
        self.assertEqual(len(base64.b64decode(key)), 16)


class SerfRPCTests(SynchronousTestCase):
    """Serf's msgpack RPC on the same port, as the ``serf`` CLI speaks it."""

    def setUp(self) -> None:
        from kongtx.cluster import rpc
        from kongtx.cluster.serf import SerfMember

        class Serfish:
            members = {"n1": SerfMember("n1", "10.0.0.1", 7946, {"role": "gw"})}
            events: list[tuple[str, bytes]] = []

            def user_event(self, name: str, payload: bytes) -> int:
                self.events.append((name, payload))
                return 1

        self.cluster = FakeCluster()
        self.cluster.serf = Serfish()  # type: ignore[attr-defined]
        self.cluster.status_of = lambda name: "alive"  # type: ignore[attr-defined]
        self.applied: list[bytes] = []
        self.cluster.apply_local_event = self.applied.append  # type: ignore[attr-defined]
        self.proto = rpc.RPCFactory(self.cluster).buildProtocol(None)  # type: ignore[arg-type]
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, *objs: Any) -> list[Any]:
        import msgpack  # type: ignore[import-untyped]

        self.transport.clear()
        self.proto.dataReceived(b"".join(msgpack.packb(o, use_bin_type=True) for o in objs))
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(self.transport.value())
        return list(unpacker)

    def test_handshake_then_members(self) -> None:
        """After a version-1 handshake, members answers Serf's member records."""
        self.assertEqual(
            self.send({"Command": "handshake", "Seq": 0}, {"Version": 1}),
            [{"Seq": 0, "Error": ""}],
        )
        header, body = self.send({"Command": "members", "Seq": 1})
        self.assertEqual(header, {"Seq": 1, "Error": ""})
        (member,) = body["Members"]
        self.assertEqual(
            (member["Name"], member["Addr"], member["Port"], member["Status"], member["Tags"]),
            ("n1", bytes([10, 0, 0, 1]), 7946, "alive", {"role": "gw"}),
        )

    def test_commands_need_a_handshake_and_unknown_ones_get_an_error(self) -> None:
        """No handshake: refused; unsupported commands are answered with an error, not dropped."""
        self.assertEqual(
            self.send({"Command": "members", "Seq": 5}), [{"Seq": 5, "Error": "Handshake required"}]
        )
        self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        (header,) = self.send({"Command": "stats", "Seq": 6})
        self.assertIn("Unsupported command", header["Error"])

    def test_event_is_sent_and_applied_here(self) -> None:
        """``serf event kong`` through a node's RPC gossips the event and applies it locally."""
        self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        reply = self.send(
            {"Command": "event", "Seq": 2}, {"Name": "kong", "Payload": b"{}", "Coalesce": True}
        )
        self.assertEqual(reply, [{"Seq": 2, "Error": ""}])
        self.assertEqual(self.cluster.serf.events, [("kong", b"{}")])  # type: ignore[attr-defined]
        self.assertEqual(self.applied, [b"{}"])

    def test_join_and_force_leave(self) -> None:
        """join reports how many addresses it joined; force-leave errors come back as text."""
        self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        header, body = self.send(
            {"Command": "join", "Seq": 3}, {"Existing": ["1.2.3.4:7946"], "Replay": False}
        )
        self.assertEqual((header["Error"], body), ("", {"Num": 1}))
        (header,) = self.send({"Command": "force-leave", "Seq": 4}, {"Node": "ghost"})
        self.assertEqual(header["Error"], "node ghost is not a member")
