# -*- test-case-name: tests.unit.test_cluster_swim -*-
"""SWIM membership as HashiCorp memberlist runs it (probe, suspect, refute, gossip).

Why memberlist's semantics and not a simpler heartbeat: a stock ``serf agent``
must see kongtx nodes as ordinary members, so we copy what it expects of a peer
(notes/serf-wire.md §1.9): answer pings at once, refute any suspicion or death
notice about ourselves with a higher incarnation, piggyback broadcasts on gossip,
and exchange full state over TCP on join and periodically.

The class is transport-agnostic: it sends with ``send(bytes, addr)`` and pulls
state with ``push_pull(addr, join)``; :mod:`kongtx.cluster.service` plugs in the
real sockets and tests a fake.  Every timer goes through the node's Clock.
"""

from __future__ import annotations

import math
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout

from kongtx import log
from kongtx.clock import Clock
from kongtx.cluster import codec
from kongtx.cluster.codec import DecodeError


@dataclass(frozen=True)
class Profile:
    """memberlist's timing profile (ML:config.go DefaultLAN/WAN/LocalConfig)."""

    probe_interval: float
    probe_timeout: float
    gossip_interval: float
    gossip_nodes: int
    push_pull_interval: float
    tcp_timeout: float
    suspicion_mult: int
    retransmit_mult: int
    indirect_checks: int
    gossip_to_dead: float


PROFILES = {
    "local": Profile(1.0, 0.2, 0.1, 3, 15.0, 1.0, 3, 2, 1, 15.0),
    "lan": Profile(1.0, 0.5, 0.2, 3, 30.0, 10.0, 4, 4, 3, 30.0),
    "wan": Profile(5.0, 3.0, 0.5, 4, 60.0, 30.0, 6, 4, 3, 60.0),
}

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
_STATE_CODE = {ALIVE: codec.STATE_ALIVE, SUSPECT: codec.STATE_SUSPECT, DEAD: codec.STATE_DEAD}


@dataclass
class Member:
    """What memberlist knows of one node."""

    name: str
    addr: str
    port: int
    meta: bytes = b""
    incarnation: int = 0
    state: str = ALIVE
    vsn: bytes = codec.VSN
    changed: float = 0.0
    suspicion: Any = field(default=None, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.addr, self.port)


class Delegate(Protocol):
    """What the serf layer supplies and hears (memberlist's Delegate + EventDelegate)."""

    def node_meta(self) -> bytes: ...
    def notify_msg(self, payload: bytes) -> None: ...
    def local_state(self, join: bool) -> bytes: ...
    def merge_remote_state(self, data: bytes, join: bool) -> None: ...
    def notify_join(self, member: Member) -> None: ...
    def notify_leave(self, member: Member) -> None: ...
    def notify_update(self, member: Member) -> None: ...


def retransmit_limit(mult: int, n: int) -> int:
    """How many times a broadcast is sent: mult × ⌈log10(n+1)⌉."""
    return mult * math.ceil(math.log10(n + 1))


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """Seconds a suspect has to refute: mult × max(1, log10 n) × probe interval."""
    return mult * max(1.0, math.log10(max(n, 1))) * interval


class Memberlist:
    """One node's view of the cluster, and the SWIM loop that keeps it current."""

    log = log.logger()

    def __init__(
        self,
        name: str,
        advertise: tuple[str, int],
        profile: Profile,
        clock: Clock,
        send: Callable[[bytes, tuple[str, int]], None],
        push_pull: Callable[[tuple[str, int], bytes], Awaitable[Any]],
        delegate: Delegate,
    ) -> None:
        self.name = name
        self.profile = profile
        self.clock = clock
        self._send = send
        self._push_pull = push_pull
        self.delegate = delegate
        self.members: dict[str, Member] = {}
        self.me = Member(name, advertise[0], advertise[1], delegate.node_meta(), incarnation=1)
        self.members[name] = self.me
        self._seq = random.randrange(1 << 16)
        self._pending: dict[int, tuple[Deferred[bytes], Any]] = {}
        #: [message, sends left, key]: a newer broadcast with the same key replaces it
        self.broadcasts: list[list[Any]] = []
        self._probe_order: list[str] = []
        self.leaving = False
        self.dropped = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Announce ourselves and start the probe, gossip and push/pull loops."""
        self.me.meta = self.delegate.node_meta()
        self.me.changed = self.clock.seconds()
        self._broadcast_alive()
        p = self.profile
        self.clock.looping_call(p.probe_interval, self.probe)
        self.clock.looping_call(p.gossip_interval, self.gossip)
        self.clock.looping_call(p.push_pull_interval, self.periodic_push_pull)

    def alive_members(self) -> list[Member]:
        """Other members that are alive or only suspected."""
        return [
            m for m in self.members.values() if m is not self.me and m.state in (ALIVE, SUSPECT)
        ]

    async def join(self, addr: tuple[str, int]) -> None:
        """Exchange full state with ``addr`` (raises when it cannot be reached)."""
        reply = await self._push_pull(addr, self.local_state(join=True))
        if reply is not None:
            self.merge_state(reply, join=True)

    async def leave(self, wait: float) -> None:
        """Broadcast our voluntary death (From = ourselves) and give it ``wait`` s to spread."""
        self.leaving = True
        self.me.incarnation += 1
        msg = codec.encode(
            codec.DEAD, {"Incarnation": self.me.incarnation, "Node": self.name, "From": self.name}
        )
        self.me.state = LEFT
        self.queue(msg, self.name)
        self._send_to_all(msg)
        if self.alive_members():
            await self.clock.sleep(wait)

    def update_meta(self) -> None:
        """Our tags changed: re-announce ourselves with a higher incarnation."""
        self.me.meta = self.delegate.node_meta()
        self.me.incarnation += 1
        self._broadcast_alive()

    # ----------------------------------------------------------------- sending

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def queue(self, msg: bytes, key: str | None = None) -> None:
        """Queue ``msg`` for piggybacking, replacing an older one about the same ``key``."""
        if key is not None:
            self.broadcasts = [b for b in self.broadcasts if b[2] != key]
        limit = retransmit_limit(self.profile.retransmit_mult, len(self.members))
        self.broadcasts.append([msg, limit, key])

    def _take_broadcasts(self, room: int) -> list[bytes]:
        taken: list[bytes] = []
        for b in sorted(self.broadcasts, key=lambda b: -b[1]):
            if len(b[0]) + 2 > room:
                continue
            taken.append(b[0])
            room -= len(b[0]) + 2
            b[1] -= 1
        self.broadcasts = [b for b in self.broadcasts if b[1] > 0]
        return taken

    def send_packet(self, msg: bytes, addr: tuple[str, int], piggyback: bool = True) -> None:
        """Send ``msg`` with as many queued broadcasts as fit one UDP buffer."""
        extra = self._take_broadcasts(codec.UDP_BUFFER - len(msg) - 16) if piggyback else []
        parts = [msg, *extra]
        self._send(parts[0] if len(parts) == 1 else codec.compound(parts), addr)

    def _send_to_all(self, msg: bytes) -> None:
        for m in self.alive_members():
            self._send(msg, m.address)

    def _broadcast_alive(self) -> None:
        me = self.me
        msg = codec.encode(
            codec.ALIVE,
            {
                "Incarnation": me.incarnation,
                "Node": me.name,
                "Addr": socket.inet_aton(me.addr),
                "Port": me.port,
                "Meta": me.meta,
                "Vsn": codec.VSN,
            },
        )
        self.queue(msg, me.name)

    # ----------------------------------------------------------------- periodic

    def gossip(self) -> None:
        """Send queued broadcasts to a few random members (recently dead ones too)."""
        if not self.broadcasts:
            return
        now = self.clock.seconds()
        targets = [
            m
            for m in self.members.values()
            if m is not self.me
            and (m.state in (ALIVE, SUSPECT) or now - m.changed < self.profile.gossip_to_dead)
        ]
        random.shuffle(targets)
        for m in targets[: self.profile.gossip_nodes]:
            parts = self._take_broadcasts(codec.UDP_BUFFER)
            if not parts:
                return
            for packet in codec.batch(parts):
                self._send(packet, m.address)

    async def periodic_push_pull(self) -> None:
        """Full state exchange with one random live member (repairs lost gossip)."""
        others = self.alive_members()
        if not others:
            return
        target = random.choice(others)
        try:
            await self.join(target.address)
        except Exception as e:
            self.log.debug("push/pull with {name} failed: {error}", name=target.name, error=e)

    async def probe(self) -> None:
        """Probe the next member: ping, then indirect pings, else suspect it."""
        if not self._probe_order:
            self._probe_order = [m.name for m in self.alive_members()]
            random.shuffle(self._probe_order)
        while self._probe_order:
            target = self.members.get(self._probe_order.pop())
            if target is not None and target is not self.me and target.state in (ALIVE, SUSPECT):
                break
        else:
            return
        p = self.profile
        seq = self._next_seq()
        ping = {"SeqNo": seq, "Node": target.name, **self._source()}
        waiting = self.expect(seq, p.probe_interval)
        self.send_packet(codec.encode(codec.PING, ping), target.address)
        early = self.clock.call_later(p.probe_timeout, self._indirect, target, seq)
        try:
            await waiting
        except DeferredTimeout:
            if target.state != DEAD and self.members.get(target.name) is target:
                self.suspect(target.name, target.incarnation, self.name)
        finally:
            if early.active():
                early.cancel()

    def _indirect(self, target: Member, seq: int) -> None:
        helpers = [m for m in self.alive_members() if m is not target and m.state == ALIVE]
        random.shuffle(helpers)
        req = {
            "SeqNo": seq,
            "Target": socket.inet_aton(target.addr),
            "Port": target.port,
            "Node": target.name,
            "Nack": False,
            **self._source(),
        }
        for m in helpers[: self.profile.indirect_checks]:
            self.send_packet(codec.encode(codec.INDIRECT_PING, req), m.address, piggyback=False)

    def _source(self) -> dict[str, Any]:
        return {
            "SourceAddr": socket.inet_aton(self.me.addr),
            "SourcePort": self.me.port,
            "SourceNode": self.name,
        }

    def expect(self, seq: int, timeout: float) -> Deferred[bytes]:
        """A Deferred fired by the ack numbered ``seq``, or failed after ``timeout``."""

        def expire() -> None:
            entry = self._pending.pop(seq, None)
            if entry is not None:
                entry[0].errback(DeferredTimeout(f"no ack for {seq}"))

        d: Deferred[bytes] = Deferred()
        self._pending[seq] = (d, self.clock.call_later(timeout, expire))
        return d

    # ----------------------------------------------------------------- receiving

    def handle_packet(self, data: bytes, addr: tuple[str, int], keys: Any) -> None:
        """Dispatch every message of one datagram; raises DecodeError if malformed."""
        for msg in codec.open_packet(data, keys):
            self.handle_message(msg, addr)

    def handle_message(self, msg: bytes, addr: tuple[str, int]) -> None:
        """One message (type byte + body), from UDP or a TCP stream."""
        kind = msg[0]
        if kind == codec.USER:
            self.delegate.notify_msg(msg[1:])
            return
        handler = self._handlers.get(kind)
        if handler is None:
            raise DecodeError(f"unexpected message type {kind}")
        handler(self, codec.fields(codec.unpack(msg[1:])), addr)

    def _on_ping(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        node = codec.text(f.get("Node"))
        if node and node != self.name:
            return  # memberlist drops pings meant for another node at our address
        reply_to = addr
        source = codec.raw(f.get("SourceAddr"))
        if len(source) == 4 and f.get("SourcePort"):
            reply_to = (socket.inet_ntoa(source), codec.integer(f.get("SourcePort")))
        ack = codec.encode(codec.ACK, {"SeqNo": codec.integer(f.get("SeqNo")), "Payload": b""})
        self._send(ack, reply_to)

    def _on_indirect(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        target = (socket.inet_ntoa(codec.raw(f.get("Target"))), codec.integer(f.get("Port")))
        their_seq = codec.integer(f.get("SeqNo"))
        reply_to = addr
        source = codec.raw(f.get("SourceAddr"))
        if len(source) == 4 and f.get("SourcePort"):
            reply_to = (socket.inet_ntoa(source), codec.integer(f.get("SourcePort")))
        seq = self._next_seq()
        waiting = self.expect(seq, self.profile.probe_timeout)
        ping = {"SeqNo": seq, "Node": codec.text(f.get("Node")), **self._source()}
        self._send(codec.encode(codec.PING, ping), target)
        want_nack = bool(f.get("Nack"))

        def acked(_: Any) -> None:
            self._send(codec.encode(codec.ACK, {"SeqNo": their_seq, "Payload": b""}), reply_to)

        def missed(failure: Any) -> None:
            failure.trap(DeferredTimeout)
            if want_nack:
                self._send(codec.encode(codec.NACK, {"SeqNo": their_seq}), reply_to)

        waiting.addCallbacks(acked, missed)

    def _on_ack(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        entry = self._pending.pop(codec.integer(f.get("SeqNo")), None)
        if entry is not None:
            d, timer = entry
            if timer.active():
                timer.cancel()
            d.callback(codec.raw(f.get("Payload")))

    def _on_nack(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        """A helper could not reach the target either; the probe timeout decides."""

    def _on_alive(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        self.alive(
            codec.text(f.get("Node")),
            codec.integer(f.get("Incarnation")),
            socket.inet_ntoa(codec.raw(f.get("Addr"))),
            codec.integer(f.get("Port")),
            codec.raw(f.get("Meta")),
            codec.raw(f.get("Vsn")),
        )

    def _on_suspect(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        self.suspect(
            codec.text(f.get("Node")),
            codec.integer(f.get("Incarnation")),
            codec.text(f.get("From")),
        )

    def _on_dead(self, f: dict[str, Any], addr: tuple[str, int]) -> None:
        self.dead(
            codec.text(f.get("Node")),
            codec.integer(f.get("Incarnation")),
            codec.text(f.get("From")),
        )

    _handlers: dict[int, Callable[[Memberlist, dict[str, Any], tuple[str, int]], None]] = {
        codec.PING: _on_ping,
        codec.INDIRECT_PING: _on_indirect,
        codec.ACK: _on_ack,
        codec.NACK: _on_nack,
        codec.ALIVE: _on_alive,
        codec.SUSPECT: _on_suspect,
        codec.DEAD: _on_dead,
    }

    # ----------------------------------------------------------------- state

    def refute(self, accused: int) -> None:
        """Someone thinks we are suspect, dead or older: out-bid them and say we live."""
        self.me.incarnation = max(self.me.incarnation, accused) + 1
        self._broadcast_alive()

    def alive(self, name: str, inc: int, addr: str, port: int, meta: bytes, vsn: bytes) -> None:
        """memberlist's aliveNode."""
        if not name:
            raise DecodeError("alive without a name")
        if len(vsn) >= 6 and (vsn[0] == 0 or vsn[0] > vsn[1]):
            return  # memberlist drops alives with a broken protocol range
        if name == self.name:
            if self.leaving or inc < self.me.incarnation:
                return
            if inc == self.me.incarnation and meta == self.me.meta:
                return
            self.refute(inc)
            return
        m = self.members.get(name)
        now = self.clock.seconds()
        if m is None:
            m = self.members[name] = Member(name, addr, port, meta, inc, ALIVE, vsn, now)
            self._rebroadcast_alive(m)
            self.delegate.notify_join(m)
            return
        moved = (addr, port) != m.address and m.state in (DEAD, LEFT)
        if inc <= m.incarnation and not moved:
            return
        was = m.state
        changed_meta = meta != m.meta
        m.addr, m.port, m.meta, m.incarnation, m.vsn = addr, port, meta, inc, vsn or m.vsn
        self._clear_suspicion(m)
        m.state = ALIVE
        if was != ALIVE:
            m.changed = now
        self._rebroadcast_alive(m)
        if was in (DEAD, LEFT):
            self.delegate.notify_join(m)
        elif changed_meta:
            self.delegate.notify_update(m)

    def _rebroadcast_alive(self, m: Member) -> None:
        msg = codec.encode(
            codec.ALIVE,
            {
                "Incarnation": m.incarnation,
                "Node": m.name,
                "Addr": socket.inet_aton(m.addr),
                "Port": m.port,
                "Meta": m.meta,
                "Vsn": m.vsn,
            },
        )
        self.queue(msg, m.name)

    def suspect(self, name: str, inc: int, source: str) -> None:
        """memberlist's suspectNode: start the clock on a member, or refute if it is us."""
        if name == self.name:
            if not self.leaving:
                self.refute(inc)
            return
        m = self.members.get(name)
        if m is None or inc < m.incarnation or m.state != ALIVE:
            return
        m.incarnation, m.state, m.changed = inc, SUSPECT, self.clock.seconds()
        self.queue(
            codec.encode(codec.SUSPECT, {"Incarnation": inc, "Node": name, "From": source}), name
        )
        timeout = suspicion_timeout(
            self.profile.suspicion_mult, len(self.members), self.profile.probe_interval
        )
        m.suspicion = self.clock.call_later(timeout, self._suspicion_expired, m, inc)

    def _suspicion_expired(self, m: Member, inc: int) -> None:
        if m.state == SUSPECT and m.incarnation == inc:
            self.log.info("marking {name} as failed, suspect timeout reached", name=m.name)
            self.dead(m.name, inc, self.name)

    def _clear_suspicion(self, m: Member) -> None:
        if m.suspicion is not None and m.suspicion.active():
            m.suspicion.cancel()
        m.suspicion = None

    def dead(self, name: str, inc: int, source: str) -> None:
        """memberlist's deadNode; From == Node means a voluntary leave."""
        if name == self.name:
            if not self.leaving:
                self.refute(inc)
            return
        m = self.members.get(name)
        if m is None or inc < m.incarnation or m.state in (DEAD, LEFT):
            return
        self._clear_suspicion(m)
        m.incarnation, m.changed = inc, self.clock.seconds()
        m.state = LEFT if source == name else DEAD
        self.queue(
            codec.encode(codec.DEAD, {"Incarnation": inc, "Node": name, "From": source}), name
        )
        self.delegate.notify_leave(m)

    # ----------------------------------------------------------------- push/pull

    def local_state(self, join: bool) -> bytes:
        """A pushPull message: every member we know, then the serf layer's state."""
        user = self.delegate.local_state(join)
        nodes = list(self.members.values())
        out = [
            codec.encode(
                codec.PUSH_PULL, {"Nodes": len(nodes), "UserStateLen": len(user), "Join": join}
            )
        ]
        for m in nodes:
            state = codec.STATE_LEFT if m.state == LEFT else _STATE_CODE[m.state]
            out.append(
                codec.pack(
                    {
                        "Name": m.name,
                        "Addr": socket.inet_aton(m.addr),
                        "Port": m.port,
                        "Meta": m.meta,
                        "Incarnation": m.incarnation,
                        "State": state,
                        "Vsn": m.vsn,
                    }
                )
            )
        out.append(user)
        return b"".join(out)

    def merge_state(
        self, body: tuple[dict[str, Any], list[dict[str, Any]], bytes], join: bool
    ) -> None:
        """memberlist's mergeState then the delegate's MergeRemoteState."""
        _, nodes, user = body
        for n in nodes:
            name, inc = codec.text(n.get("Name")), codec.integer(n.get("Incarnation"))
            state = codec.integer(n.get("State"))
            if state == codec.STATE_ALIVE:
                addr = socket.inet_ntoa(codec.raw(n.get("Addr")))
                self.alive(
                    name,
                    inc,
                    addr,
                    codec.integer(n.get("Port")),
                    codec.raw(n.get("Meta")),
                    codec.raw(n.get("Vsn")),
                )
            elif state == codec.STATE_LEFT:
                self.dead(name, inc, name)
            else:
                self.suspect(name, inc, self.name)
        if user:
            self.delegate.merge_remote_state(user, join)
