# -*- test-case-name: tests.unit.test_cluster_swim -*-
"""SWIM's failure detector for Memberlist: the probe round, indirect pings, acks awaited.

Why separate: this is how a member comes to be *suspected* (ping the next member
in a shuffled round, ask a few others to ping it when it is slow, suspect it when
no ack came), with Lifeguard's local health scaling every timeout; what a
suspicion then does to the member list is the state machine's, in
kongtx.cluster.memberlist.  Acks and nacks arrive through kongtx.cluster.handlers.
"""

from __future__ import annotations

import random
import socket
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout

from kongtx.cluster import codec
from kongtx.cluster.members import ALIVE, AWARENESS_MAX, DEAD, SUSPECT, Member

if TYPE_CHECKING:
    from kongtx.cluster.memberlist import Memberlist


async def probe(ml: Memberlist) -> None:
    """Probe the next member: ping, then indirect pings, else suspect it."""
    if not ml.probe_order:
        ml.probe_order = [m.name for m in ml.alive_members()]
        random.shuffle(ml.probe_order)
    while ml.probe_order:
        target = ml.members.get(ml.probe_order.pop())
        if target is not None and target is not ml.me and target.state in (ALIVE, SUSPECT):
            break
    else:
        return
    p = ml.profile
    scale = ml.awareness + 1
    seq = ml.next_seq()
    ping = {"SeqNo": seq, "Node": target.name, **ml.source_fields()}
    waiting = expect(ml, seq, p.probe_interval * scale)
    ml.send_packet(codec.encode(codec.PING, ping), target.address)
    asked: list[int] = []
    early = ml.clock.call_later(p.probe_timeout * scale, indirect, ml, target, seq, asked)
    try:
        await waiting
        aware(ml, -1)
    except DeferredTimeout:
        # Lifeguard: helpers that did not even nack suggest *we* are the slow one
        aware(ml, sum(asked) - ml.nacks.pop(seq, 0))
        if target.state != DEAD and ml.members.get(target.name) is target:
            ml.suspect(target.name, target.incarnation, ml.name)
    finally:
        ml.nacks.pop(seq, None)
        if early.active():
            early.cancel()


def aware(ml: Memberlist, delta: int) -> None:
    """Lifeguard's local health: 0 (healthy) .. 7; timeouts scale by it plus one."""
    ml.awareness = max(0, min(AWARENESS_MAX - 1, ml.awareness + delta))


def indirect(ml: Memberlist, target: Member, seq: int, asked: list[int]) -> None:
    """Ask a few live members to ping ``target`` for us (``asked``: 1 for each that will nack)."""
    helpers = [m for m in ml.alive_members() if m is not target and m.state == ALIVE]
    random.shuffle(helpers)
    for m in helpers[: ml.profile.indirect_checks]:
        nack = len(m.vsn) >= 2 and m.vsn[1] >= 4  # protocol 4+ understands nacks
        req = {
            "SeqNo": seq,
            "Target": socket.inet_aton(target.addr),
            "Port": target.port,
            "Node": target.name,
            "Nack": nack,
            **ml.source_fields(),
        }
        asked.append(1 if nack else 0)
        ml.send_packet(codec.encode(codec.INDIRECT_PING, req), m.address, piggyback=False)


def expect(ml: Memberlist, seq: int, timeout: float) -> Deferred[bytes]:
    """A Deferred fired by the ack numbered ``seq``, or failed after ``timeout``."""

    def expire() -> None:
        entry = ml.pending.pop(seq, None)
        if entry is not None:
            entry[0].errback(DeferredTimeout(f"no ack for {seq}"))

    d: Deferred[bytes] = Deferred()
    ml.pending[seq] = (d, ml.clock.call_later(timeout, expire))
    return d
