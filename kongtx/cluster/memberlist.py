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
Beside it: kongtx.cluster.handlers (each message's reflex) and
kongtx.cluster.probing (the failure detector's probe round).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred

from kongtx import log
from kongtx.clock import Clock
from kongtx.cluster import codec, handlers, probing
from kongtx.cluster.broadcasts import MAX_QUEUE, BroadcastQueue
from kongtx.cluster.codec import DecodeError
from kongtx.cluster.members import (
    ALIVE,
    DEAD,
    LEFT,
    PROFILES,
    SUSPECT,
    Delegate,
    Member,
    Profile,
    alive_message,
    node_entry,
    retransmit_limit,
    suspicion_timeout,
)

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "MAX_QUEUE",
    "PROFILES",
    "SUSPECT",
    "Delegate",
    "Member",
    "Memberlist",
    "Profile",
    "retransmit_limit",
    "suspicion_timeout",
]


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
        self.send_raw = send
        self._push_pull = push_pull
        self.delegate = delegate
        self.members: dict[str, Member] = {}
        self.me = Member(name, advertise[0], advertise[1], delegate.node_meta(), incarnation=1)
        self.members[name] = self.me
        self._seq = random.randrange(1 << 16)
        self.pending: dict[int, tuple[Deferred[bytes], Any]] = {}
        self._broadcasts = BroadcastQueue()
        #: the members still to probe in this round (shuffled; probing.probe)
        self.probe_order: list[str] = []
        self.leaving = False
        self.dropped = 0
        #: Lifeguard local health (probing.aware) and nacks received per probe
        self.awareness = 0
        self.nacks: dict[int, int] = {}

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
        self.send_to_all(msg)
        if self.alive_members():
            await self.clock.sleep(wait)

    def update_meta(self) -> None:
        """Our tags changed: re-announce ourselves with a higher incarnation."""
        self.me.meta = self.delegate.node_meta()
        self.me.incarnation += 1
        self._broadcast_alive()

    # ----------------------------------------------------------------- sending

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    @property
    def broadcasts(self) -> list[list[Any]]:
        """The queued broadcasts: ``[message, sends left, key]``."""
        return self._broadcasts.items

    def queue(self, msg: bytes, key: str | None = None) -> None:
        """Queue ``msg`` for piggybacking, replacing an older one about the same ``key``."""
        limit = retransmit_limit(self.profile.retransmit_mult, len(self.members))
        self._broadcasts.push(msg, limit, key)

    def send_packet(self, msg: bytes, addr: tuple[str, int], piggyback: bool = True) -> None:
        """Send ``msg`` with as many queued broadcasts as fit one UDP buffer."""
        extra = self._broadcasts.take(codec.UDP_BUFFER - len(msg) - 16) if piggyback else []
        parts = [msg, *extra]
        self.send_raw(parts[0] if len(parts) == 1 else codec.compound(parts), addr)

    def send_to_all(self, msg: bytes) -> None:
        for m in self.alive_members():
            self.send_raw(msg, m.address)

    def _broadcast_alive(self) -> None:
        self.me.vsn = codec.VSN
        self.queue(alive_message(self.me), self.me.name)

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
            parts = self._broadcasts.take(codec.UDP_BUFFER)
            if not parts:
                return
            for packet in codec.batch(parts):
                self.send_raw(packet, m.address)

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
        """Probe the next member: ping, indirect pings, else suspect it (cluster.probing)."""
        await probing.probe(self)

    def _aware(self, delta: int) -> None:
        probing.aware(self, delta)

    def source_fields(self) -> dict[str, Any]:
        return {
            "SourceAddr": socket.inet_aton(self.me.addr),
            "SourcePort": self.me.port,
            "SourceNode": self.name,
        }

    def expect(self, seq: int, timeout: float) -> Deferred[bytes]:
        """A Deferred fired by the ack numbered ``seq``, or failed after ``timeout``."""
        return probing.expect(self, seq, timeout)

    # ----------------------------------------------------------------- receiving

    def handle_packet(self, data: bytes, addr: tuple[str, int], keys: Any) -> None:
        """Dispatch every message of one datagram; raises DecodeError if malformed."""
        handlers.handle_packet(self, data, addr, keys)

    def handle_message(self, msg: bytes, addr: tuple[str, int]) -> None:
        """One message (type byte + body), from UDP or a TCP stream."""
        handlers.handle_message(self, msg, addr)

    # ----------------------------------------------------------------- state

    def refute(self, accused: int) -> None:
        """Someone thinks we are suspect, dead or older: out-bid them and say we live."""
        self.me.incarnation = max(self.me.incarnation, accused) + 1
        self._aware(1)
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
        self.queue(alive_message(m), m.name)

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
        out += [node_entry(m) for m in nodes]
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
