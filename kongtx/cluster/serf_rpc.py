# -*- test-case-name: tests.unit.test_cluster_cli -*-
"""The part of Serf's msgpack RPC that operators' ``serf`` commands use.

Why: Kong 0.9 operators inspect a node with ``serf members -rpc-addr=…``, join with
``serf join`` and inject events with ``serf event``; serving those on the node's
``cluster_listen_rpc`` keeps their scripts working.  The protocol (serf's
``client/rpc_client.go`` and ``cmd/serf/command/agent/ipc.go``): a stream of msgpack
objects, each request a header ``{Command, Seq}`` optionally followed by a body, each
reply a header ``{Seq, Error}`` optionally followed by a body.  Supported:
``handshake``, ``members``, ``members-filtered``, ``join``, ``force-leave``, ``event``,
``query`` (so ``serf reachability`` and ``serf query`` work);
anything else is answered with an error rather than dropped, so the client never hangs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
from twisted.internet import protocol
from twisted.internet.defer import Deferred

from kongtx import log
from kongtx.cluster import codec, queries
from kongtx.cluster.events import EVENT_NAME

if TYPE_CHECKING:
    from kongtx.cluster.service import ClusterService

#: commands whose header is followed by a body
WITH_BODY = frozenset(
    {
        "handshake",
        "auth",
        "members-filtered",
        "join",
        "force-leave",
        "event",
        "stream",
        "monitor",
        "stop",
        "query",
        "respond",
        "install-key",
        "use-key",
        "remove-key",
        "tags",
        "get-coordinate",
    }
)


class SerfRPC(protocol.Protocol):
    """One ``serf`` CLI connection."""

    log = log.logger()

    def __init__(self, cluster: ClusterService) -> None:
        self.cluster = cluster
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=2**20)
        self.header: dict[str, Any] | None = None
        self.shook = False

    def dataReceived(self, data: bytes) -> None:
        self.unpacker.feed(data)
        try:
            for obj in self.unpacker:
                if self.header is None:
                    if not isinstance(obj, dict):
                        raise ValueError("a request header is a map")
                    self.header = obj
                    if obj.get("Command") in WITH_BODY:
                        continue
                    obj = None
                header, self.header = self.header, None
                d = Deferred.fromCoroutine(self._handle(header, obj))
                d.addErrback(lambda f: self.log.failure("serf rpc request failed", f))
        except (ValueError, msgpack.ExtraData) as e:
            self.log.debug("bad serf rpc stream: {error}", error=e)
            self._t.loseConnection()

    @property
    def _t(self) -> Any:
        return self.transport

    def _reply(self, seq: Any, error: str = "", body: Any = None) -> None:
        out = msgpack.packb({"Seq": seq, "Error": error}, use_bin_type=True)
        if body is not None:
            out += msgpack.packb(body, use_bin_type=True)
        self._t.write(out)

    async def _handle(self, header: dict[str, Any], body: Any) -> None:
        command, seq = header.get("Command"), header.get("Seq", 0)
        if command == "handshake":
            version = body.get("Version") if isinstance(body, dict) else None
            if version != 1:
                self._reply(seq, "Unsupported version")
                return
            self.shook = True
            self._reply(seq)
            return
        if not self.shook:
            self._reply(seq, "Handshake required")
            return
        args = body if isinstance(body, dict) else {}
        try:
            if command == "members":
                self._reply(seq, body={"Members": self._members({})})
            elif command == "members-filtered":
                self._reply(seq, body={"Members": self._members(args)})
            elif command == "join":
                joined = 0
                errors = []
                for address in args.get("Existing") or []:
                    try:
                        await self.cluster.join(str(address))
                        joined += 1
                    except ValueError as e:
                        # the serf CLI adds its own "Error joining the cluster: "
                        errors.append(str(e).removeprefix("Error joining the cluster: "))
                self._reply(seq, "" if joined else "; ".join(errors), {"Num": joined})
            elif command == "force-leave":
                await self.cluster.force_leave(str(args.get("Node", "")))
                self._reply(seq)
            elif command == "event":
                self._event(args)
                self._reply(seq)
            elif command == "query":
                await self._query(seq, args)
            else:
                self._reply(seq, f"Unsupported command: {command}")
        except ValueError as e:
            self._reply(seq, str(e).removeprefix("Error force leaving: "))

    async def _query(self, seq: Any, args: dict[str, Any]) -> None:
        """Originate a query and stream its acks and responses, then ``done``."""
        filters = []
        if args.get("FilterNodes"):
            filters.append(bytes([0]) + codec.pack([str(n) for n in args["FilterNodes"]]))
        for tag, expr in (args.get("FilterTags") or {}).items():
            filters.append(bytes([1]) + codec.pack({"Tag": str(tag), "Expr": str(expr)}))
        self._reply(seq)

        def record(kind: str, source: str, payload: bytes) -> None:
            if self.transport is not None:
                self._reply(seq, body={"Type": kind, "From": source, "Payload": payload})

        timeout = int(args.get("Timeout") or 0) / 1e9
        await queries.originate(
            self.cluster.serf,
            str(args.get("Name", "")),
            codec.raw(args.get("Payload")),
            record,
            timeout,
            bool(args.get("RequestAck")),
            filters,
        )
        if self.transport is not None:
            self._reply(seq, body={"Type": "done", "From": "", "Payload": b""})

    def _event(self, args: dict[str, Any]) -> None:
        name = str(args.get("Name", ""))
        payload = codec.raw(args.get("Payload"))
        self.cluster.serf.user_event(name, payload)
        if name == EVENT_NAME:
            # Serf delivers a node's own events to itself; ours skip that echo
            self.cluster.apply_local_event(payload)

    def _members(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        name_re = _regex(filters.get("Name"))
        status_re = _regex(filters.get("Status"))
        tag_res = {k: _regex(v) for k, v in (filters.get("Tags") or {}).items()}
        for sm in self.cluster.serf.members.values():
            status = self.cluster.status_of(sm.name)
            if name_re and not name_re.fullmatch(sm.name):
                continue
            if status_re and not status_re.fullmatch(status):
                continue
            if any(
                rx is not None and not rx.fullmatch(sm.tags.get(k, "")) for k, rx in tag_res.items()
            ):
                continue
            vsn = list(sm.vsn) + [0] * (6 - len(sm.vsn))
            found.append(
                {
                    "Name": sm.name,
                    "Addr": ipaddress.IPv4Address(sm.addr).packed,
                    "Port": sm.port,
                    "Tags": dict(sm.tags),
                    "Status": status,
                    "ProtocolMin": vsn[0],
                    "ProtocolMax": vsn[1],
                    "ProtocolCur": vsn[2],
                    "DelegateMin": vsn[3],
                    "DelegateMax": vsn[4],
                    "DelegateCur": vsn[5],
                }
            )
        return found


def _regex(value: Any) -> re.Pattern[str] | None:
    if not value:
        return None
    try:
        return re.compile(str(value))
    except re.error:
        return re.compile(re.escape(str(value)))
