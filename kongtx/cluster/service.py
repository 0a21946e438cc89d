# -*- test-case-name: tests.cluster.test_cluster_nodes -*-
"""The cluster as one service: gossip sockets, memberlist, serf, invalidations, RPC.

Start order (each step needs the previous one): sockets bound → memberlist and
serf running → invalidation stream caught up → ``nodes`` row written and known
nodes joined → RPC port open.  Stop is a Serf leave: a leave intent then a
voluntary death notice, so peers show ``left`` and not ``failed``; the row is
deleted so new nodes stop trying to join us.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from kongtx import log
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.cluster import codec, queries, rpc, transport
from kongtx.cluster.events import EVENT_NAME, InvalidationStream
from kongtx.cluster.memberlist import ALIVE, PROFILES, Memberlist
from kongtx.cluster.nodes import NodeRegistry
from kongtx.cluster.serf import STATUS_ALIVE, STATUS_FAILED, STATUS_LEFT, Serf
from kongtx.config import Address, Config
from kongtx.store.interface import IStore

LEAVE_PROPAGATE = 1.0
#: Serf's defaults: try a failed member again every 30 s; forget failed/left after 24 h
RECONNECT_INTERVAL = 30.0
REAP_AFTER = 24 * 3600.0
#: environment variable of the datagram-loss test hook (a fraction, 0..1)
LOSS_HOOK = "KONGTX_TEST_GOSSIP_LOSS"


def advertise_address(config: Config) -> tuple[str, int]:
    """``cluster_advertise``, else the listen address, else the first private IPv4.

    Kong 0.9's most reported cluster bug was a node advertising 127.0.0.1 to peers
    elsewhere (SPEC §6.6): we only fall back to loopback when there is no other
    address, and say so.
    """
    if config.cluster_advertise is not None:
        return (config.cluster_advertise.host, config.cluster_advertise.port)
    host, port = config.cluster_listen.host, config.cluster_listen.port
    if host not in ("0.0.0.0", ""):
        return (host, port)
    found = _private_ipv4()
    if found is None:
        ClusterService.log.warn(
            "no private IPv4 address found: advertising 127.0.0.1 (set cluster_advertise)"
        )
        return ("127.0.0.1", port)
    return (found, port)


def _private_ipv4() -> str | None:
    import ipaddress

    candidates: list[str] = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidates.append(str(info[4][0]))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            candidates.append(s.getsockname()[0])
    except OSError:
        pass
    for c in candidates:
        ip = ipaddress.IPv4Address(c)
        if ip.is_private and not ip.is_loopback:
            return c
    return None


def parse_address(address: str) -> tuple[str, int]:
    """``ip[:port]`` (port 7946 by default) as a tuple; ValueError when malformed."""
    host, _, port = address.strip().rpartition(":")
    if not host:
        host, port = port, "7946"
    try:
        socket.inet_aton(host)
        number = int(port)
    except (OSError, ValueError) as e:
        raise ValueError(f"invalid address {address!r}") from e
    if not 0 < number < 65536:
        raise ValueError(f"invalid address {address!r}")
    return (host, number)


class ClusterService(Service):
    """The gossip layer of one node (``IService``)."""

    log = log.logger()

    def __init__(
        self,
        config: Config,
        store: IStore,
        dao: Any,
        cache: Cache,
        clock: Clock,
        reactor: Any,
        node_name: str,
    ) -> None:
        self.config = config
        self.store = store
        self.dao = dao
        self.cache = cache
        self.clock = clock
        self.reactor = reactor
        self.node_name = node_name
        self.keys = (
            [codec.decode_key(config.cluster_encrypt_key)] if config.cluster_encrypt_key else []
        )
        self.advertise = advertise_address(config)
        self.profile = PROFILES[config.cluster_profile]
        self.serf = Serf(node_name, {}, clock, self._on_user_event)
        self.memberlist = Memberlist(
            node_name, self.advertise, self.profile, clock, self._send, self._push_pull, self.serf
        )
        self.serf.attach(self.memberlist)
        find = dao.find if dao is not None else None
        self.stream = InvalidationStream(
            node_name,
            store,
            cache,
            clock,
            lambda payload: self.serf.user_event(EVENT_NAME, payload),
            find,
            interval=config.db_update_frequency,
        )
        self.registry = NodeRegistry(
            store,
            clock,
            node_name,
            f"{self.advertise[0]}:{self.advertise[1]}",
            config.cluster_ttl_on_failure,
            self.join,
            lambda: sum(1 for r in self.serf.member_rows() if r["status"] == ALIVE),
        )
        self.udp = transport.GossipDatagram(self._on_packet)
        loss = float(os.environ.get(LOSS_HOOK) or 0)
        if loss > 0:
            # test hook only: lose a fraction of incoming datagrams (tests/cluster)
            self.log.warn(
                "{hook}={loss}: dropping gossip datagrams on purpose", hook=LOSS_HOOK, loss=loss
            )
            self.udp.drop_filter = lambda _: random.random() < loss
        self._ports: list[Any] = []
        #: other user events by name (``kongtx-health``: kongtx.cluster.health_gossip)
        self.user_event_handlers: dict[str, Callable[[bytes, int], None]] = {}

    # ----------------------------------------------------------------- IService

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self.start())
        d.addErrback(lambda f: self.log.failure("cluster start failed", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self.stop())

    async def start(self) -> None:
        """Bind, start gossip, catch up on invalidations, register and join."""
        listen: Address = self.config.cluster_listen
        self._ports.append(self.reactor.listenUDP(listen.port, self.udp, interface=listen.host))
        factory = transport.StreamServerFactory(self.keys, self._on_stream)
        self._ports.append(self.reactor.listenTCP(listen.port, factory, interface=listen.host))
        self.memberlist.start()
        if self.dao is not None:
            self.dao.add_listener(self.stream.local_change)
        await self.stream.start()
        await self.registry.start()
        self.clock.looping_call(RECONNECT_INTERVAL, self.reconnect)
        rpc_listen = self.config.cluster_listen_rpc
        self._ports.append(
            self.reactor.listenTCP(rpc_listen.port, rpc.RPCFactory(self), interface=rpc_listen.host)
        )
        self.log.info(
            "cluster: {name} gossiping on {listen} as {advertise} ({profile})",
            name=self.node_name,
            listen=f"{listen.host}:{listen.port}",
            advertise=f"{self.advertise[0]}:{self.advertise[1]}",
            profile=self.config.cluster_profile,
        )

    async def stop(self) -> None:
        """Leave the cluster (peers see ``left``), delete our row, close the sockets."""
        if not self.memberlist.leaving and self._ports:
            self.serf.leaving = True
            self.serf.broadcast_leave(self.node_name)
            try:
                await self.memberlist.leave(LEAVE_PROPAGATE)
            except Exception:
                self.log.failure("cluster leave failed")
            try:
                await self.registry.stop()
            except Exception as e:
                self.log.warn("could not delete our nodes row: {error}", error=e)
        ports, self._ports = self._ports, []
        for port in ports:
            result = port.stopListening()
            if isinstance(result, Deferred):
                await result

    # ----------------------------------------------------------------- wiring

    def _send(self, packet: bytes, addr: tuple[str, int]) -> None:
        self.udp.send(codec.seal_packet(packet, self.keys[0] if self.keys else None), addr)

    def _on_packet(self, data: bytes, addr: tuple[str, int]) -> None:
        self.memberlist.handle_packet(data, addr, self.keys)

    async def _push_pull(self, addr: tuple[str, int], request: bytes) -> Any:
        framed = transport.frame_stream(request, self.keys[0] if self.keys else None)
        reply = await transport.exchange(
            self.reactor, self.clock, addr, framed, self.keys, self.profile.tcp_timeout
        )
        if reply is None or reply[0] != codec.PUSH_PULL:
            raise ConnectionError(f"no push/pull reply from {addr[0]}:{addr[1]}")
        return reply[1]

    def _on_stream(self, parsed: transport.Parsed, stream: transport.GossipStream) -> None:
        kind, body = parsed
        key = self.keys[0] if self.keys else None
        conn: Any = stream.transport
        peer = conn.getPeer()
        try:
            if kind == codec.PUSH_PULL:
                reply = self.memberlist.local_state(join=False)
                conn.write(transport.frame_stream(reply, key))
                conn.loseConnection()
                self.memberlist.merge_state(body, join=bool(codec.fields(body[0]).get("Join")))
            elif kind == codec.PING:
                f = codec.fields(body)
                node = codec.text(f.get("Node"))
                if not node or node == self.node_name:
                    ack = codec.encode(
                        codec.ACK, {"SeqNo": codec.integer(f.get("SeqNo")), "Payload": b""}
                    )
                    conn.write(transport.frame_stream(ack, key))
                conn.loseConnection()
            elif kind == codec.USER:
                self.serf.notify_msg(body)
            else:
                self.memberlist.handle_message(
                    bytes([kind]) + codec.pack(body), (peer.host, peer.port)
                )
        except codec.DecodeError as e:
            self.udp.dropped += 1
            self.log.debug("dropped a gossip stream message: {error}", error=e)
            conn.loseConnection()

    def _on_user_event(self, name: str, payload: bytes, ltime: int) -> None:
        if name != EVENT_NAME:
            handler = self.user_event_handlers.get(name)
            if handler is not None:
                handler(payload, ltime)
            return
        d = Deferred.fromCoroutine(self.stream.on_event(payload))
        d.addErrback(lambda f: self.log.failure("applying a kong event failed", f))

    async def reconnect(self) -> None:
        """Serf's reconnect: after a partition heals, both sides think the other failed
        and nobody probes a failed member, so we try one of them; old ones are reaped."""
        now = self.clock.seconds()
        failed = []
        for name, sm in list(self.serf.members.items()):
            m = self.memberlist.members.get(name)
            if sm.status not in (STATUS_FAILED, STATUS_LEFT) or m is None:
                continue
            if now - m.changed > REAP_AFTER:
                del self.serf.members[name]
                del self.memberlist.members[name]
                self.log.info("reaped member {name}", name=name)
            elif sm.status == STATUS_FAILED:
                failed.append(m)
        if failed:
            target = random.choice(failed)
            try:
                await self.memberlist.join(target.address)
            except Exception as e:
                self.log.debug("reconnect to {name} failed: {error}", name=target.name, error=e)

    # ----------------------------------------------------------------- operations

    def status_of(self, name: str) -> str:
        """``alive``, ``leaving``, ``left`` or ``failed`` (KeyError for strangers)."""
        return self.serf.status_of(name)

    def apply_local_event(self, payload: bytes) -> None:
        """A ``kong`` event originated here by RPC (``serf event``) applies to us too."""
        d = Deferred.fromCoroutine(self.stream.on_event(payload))
        d.addErrback(lambda f: self.log.failure("applying a kong event failed", f))

    def members(self) -> list[dict[str, Any]]:
        """``[{name, address, status}]`` (SPEC §1.5 ``GET /cluster``)."""
        return [
            {"name": r["name"], "address": r["address"], "status": r["status"]}
            for r in self.serf.member_rows()
        ]

    async def join(self, address: str) -> None:
        """Join the cluster through ``address`` (``ip:port``); ValueError with Serf's wording."""
        try:
            addr = parse_address(address)
            self._check_advertise(addr)
            await self.memberlist.join(addr)
        except Exception as e:
            raise ValueError(f"Error joining the cluster: {address}: {e}") from e
        self.serf.broadcast_join()

    def _check_advertise(self, peer: tuple[str, int]) -> None:
        """Kong 0.9's most reported cluster bug (SPEC §6.6): advertising loopback to a
        peer on another machine, which then can never reach us."""
        if self.advertise[0].startswith("127.") and not peer[0].startswith("127."):
            self.log.warn(
                "advertising {ours} to a peer at {peer}: it cannot reach us there;"
                " set cluster_advertise to an address it can reach",
                ours=f"{self.advertise[0]}:{self.advertise[1]}",
                peer=f"{peer[0]}:{peer[1]}",
            )

    async def force_leave(self, name: str) -> None:
        """Serf's force-leave: mark a failed member ``left`` cluster-wide."""
        if name not in self.serf.members:
            raise ValueError(f"Error force leaving: node {name} is not a member")
        self.serf.broadcast_leave(name)

    async def reachability(self, timeout: float | None = None) -> dict[str, Any]:
        """``serf reachability``: a ``_serf_ping`` query; which live members did not ack."""
        live = {n for n in self.serf.members if self.serf.status_of(n) == STATUS_ALIVE}
        total = len(self.serf.members)
        acked: set[str] = set()

        def record(kind: str, source: str, payload: bytes) -> None:
            if kind == "ack":
                acked.add(source)

        await queries.originate(self.serf, "_serf_ping", b"", record, timeout)
        return {"members": total, "live": len(live), "failed": sorted(live - acked)}
