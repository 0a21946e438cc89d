# -*- test-case-name: tests.unit.test_cluster_swim -*-
"""memberlist's TransmitLimitedQueue: what gossip and pings piggyback.

Each broadcast is sent a limited number of times (``retransmit_limit``: more as the
cluster grows), the least-sent first; a newer broadcast about the same key (a member's
alive/suspect/dead) replaces the older one, and with nobody to gossip to the queue
keeps only the newest ``MAX_QUEUE`` (Serf's MaxQueueDepth).
"""

from __future__ import annotations

from typing import Any

from kongtx.cluster import codec

#: at most this many queued broadcasts (serf's MaxQueueDepth)
MAX_QUEUE = 4096


class BroadcastQueue:
    """Queued broadcasts as ``[message, sends left, key]``, oldest first."""

    def __init__(self) -> None:
        self.items: list[list[Any]] = []

    def push(self, msg: bytes, limit: int, key: str | None = None) -> None:
        """Queue ``msg`` to be sent ``limit`` times, replacing an older one about ``key``."""
        if key is not None:
            self.items = [b for b in self.items if b[2] != key]
        self.items.append([msg, limit, key])
        if len(self.items) > MAX_QUEUE:
            del self.items[: len(self.items) - MAX_QUEUE]

    def take(self, room: int) -> list[bytes]:
        """As many broadcasts as fit ``room`` bytes (each framed with 2), least-sent first.

        A broadcast bigger than any compound travels alone, in its own datagram, when
        the whole buffer is offered.  Each one taken has one send less; spent ones go.
        """
        taken: list[bytes] = []
        whole = room >= codec.UDP_BUFFER
        for b in sorted(self.items, key=lambda b: -b[1]):
            if len(b[0]) + 2 > room:
                if whole and not taken and len(b[0]) + 2 > codec.UDP_BUFFER:
                    taken.append(b[0])
                    b[1] -= 1
                    break
                continue
            taken.append(b[0])
            room -= len(b[0]) + 2
            b[1] -= 1
        self.items = [b for b in self.items if b[1] > 0]
        return taken
