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
        self.assertIn("Failed to contact: n2", bad)

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
