# -*- test-case-name: tests.unit.test_cluster_cli -*-
"""The node's local RPC port (``cluster_listen_rpc``, 127.0.0.1:7373 by default).

Two protocols share the port, told apart by the first byte a client sends: a
JSON object (``{``) is kongtx's own line protocol, which ``kong cluster`` speaks;
anything else is Serf's msgpack RPC (kongtx.cluster.serf_rpc), so an operator's
``serf members -rpc-addr=…`` keeps working.  Why our own as well: one JSON object
per line each way is trivial to serve and to debug with ``nc``.  Requests: ``{"command": "members" | "reachability" | "join"
(+"address") | "force-leave" (+"name")}``; replies: ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "<message>"}``.  It binds to loopback by default: like
Serf's RPC it is not authenticated.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from kongtx import log
from kongtx.cluster.serf_rpc import SerfRPC

if TYPE_CHECKING:
    from kongtx.cluster.service import ClusterService


class RPCProtocol(LineOnlyReceiver):
    """One client; each request line gets one reply line."""

    delimiter = b"\n"
    MAX_LENGTH = 65536
    log = log.logger()

    def __init__(self, cluster: ClusterService) -> None:
        self.cluster = cluster

    def lineReceived(self, line: bytes) -> None:
        d = Deferred.fromCoroutine(self._answer(line))
        d.addCallback(lambda reply: self.sendLine(json.dumps(reply).encode()))
        d.addErrback(lambda f: self.log.failure("rpc request failed", f))

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            return {"ok": True, "result": await self.dispatch(request)}
        except ValueError as e:
            return {"ok": False, "error": str(e)}

    async def dispatch(self, request: dict[str, Any]) -> Any:
        command = request.get("command")
        if command == "members":
            return self.cluster.members()
        if command == "reachability":
            return await self.cluster.reachability()
        if command == "join":
            await self.cluster.join(str(request.get("address", "")))
            return None
        if command == "force-leave":
            await self.cluster.force_leave(str(request.get("name", "")))
            return None
        raise ValueError(f"unknown command {command!r}")


class _Switch(protocol.Protocol):
    """Picks the protocol from the first byte, then hands the connection over."""

    def __init__(self, cluster: ClusterService) -> None:
        self.cluster = cluster
        self.inner: protocol.Protocol | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is None:
            if data[:1] == b"{":
                self.inner = RPCProtocol(self.cluster)
            else:
                self.inner = SerfRPC(self.cluster)
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class RPCFactory(protocol.Factory):
    """Serves the RPC port for one cluster."""

    def __init__(self, cluster: ClusterService) -> None:
        self.cluster = cluster

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return _Switch(self.cluster)
