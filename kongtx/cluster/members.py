# -*- test-case-name: tests.unit.test_cluster_swim -*-
"""memberlist's vocabulary: timing profiles, member records, the delegate, formulas.

Kept apart from the SWIM loop (kongtx.cluster.memberlist) so that the serf layer
and the message handlers can share it without importing each other.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from kongtx.cluster import codec


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

#: memberlist's AwarenessMaxMultiplier: a struggling node waits up to 8x longer for acks
AWARENESS_MAX = 8

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


def alive_message(m: Member) -> bytes:
    """An ``alive`` broadcast about ``m``."""
    return codec.encode(
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


def node_entry(m: Member) -> bytes:
    """``m`` as one node of a push/pull message."""
    state = codec.STATE_LEFT if m.state == LEFT else _STATE_CODE[m.state]
    return codec.pack(
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
