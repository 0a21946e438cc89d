# -*- test-case-name: tests.unit.test_balancer_algorithms -*-
"""The three ways a balancer chooses a peer: pure index arithmetic, no I/O.

Each algorithm is built from the peers' weights (``weights[i] > 0``: a weight of
0 is never chosen) and answers :meth:`next` with the index of a peer for which
``usable(i)`` holds, or ``None`` when there is none.  Health, the address a retry
must avoid, and what a peer *is* belong to the caller (``kongtx.balancer.balancer``).

* :class:`SmoothWeightedRoundRobin`: nginx's smooth weighted round-robin.  Weights
  5, 1, 1 give ``a a b a c a a``, not ``a a a a a b c``; deterministic, so one
  node's split over ``sum(weights)`` picks is exact.
* :class:`HashRing`: consistent hashing on a ring of ``slots`` points, each owned
  by a peer in proportion to its weight.  Ownership is a pure function of the
  ordered peers, so every node maps a key to the same peer; adding a peer at the
  end moves only the slots it takes (about ``1/n`` of the keys).
* :class:`LeastConnections`: the peer with the fewest requests in flight relative
  to its weight.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence

Usable = Callable[[int], bool]


def _always(_: int) -> bool:
    return True


class SmoothWeightedRoundRobin:
    """nginx's ``ngx_http_upstream_get_peer``: smooth, weighted, deterministic.

    Every pick adds each candidate's weight to its running score and takes the
    highest, which then pays back the candidates' total.  Candidates skipped
    (unhealthy, or avoided by a retry) neither gain nor pay that round.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = [float(w) for w in weights]
        self._current = [0.0] * len(self.weights)

    def next(self, usable: Usable = _always) -> int | None:
        best = -1
        best_score = 0.0
        total = 0.0
        current = self._current
        for i, weight in enumerate(self.weights):
            if weight <= 0 or not usable(i):
                continue
            score = current[i] + weight
            current[i] = score
            total += weight
            if best < 0 or score > best_score:
                best, best_score = i, score
        if best < 0:
            return None
        current[best] -= total
        return best


def key_hash(key: str) -> int:
    """The 32-bit hash of a balancing key (CRC-32, as Kong's ring balancer used)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


class HashRing:
    """``slots`` ring positions, each owned by one peer; a key hashes to a position.

    Construction adds the peers one by one in their given order.  The first owns
    every slot; each next peer takes its weighted share from the peers holding more
    than theirs, walking the slots in an order of its own (derived from its
    ``name``), so that on every node the same ordered peers give the same ring, and
    a peer appended later changes only the slots it takes.

    Args:
        names: one stable name per peer (its address and target).
        weights: one weight per peer; peers weighing 0 own no slot.
        slots: the ring size (an upstream's ``slots``, 10..65536).
    """

    def __init__(self, names: Sequence[str], weights: Sequence[float], slots: int) -> None:
        if len(names) != len(weights):
            raise ValueError("one weight per name")
        self.slots = max(1, int(slots))
        self.names = list(names)
        self.weights = [float(w) for w in weights]
        self.owner: list[int] = [-1] * self.slots
        self.counts: list[int] = [0] * len(self.weights)
        self._build()

    def _build(self) -> None:
        slots, owner, counts, weights = self.slots, self.owner, self.counts, self.weights
        placed: list[int] = []
        for j, weight in enumerate(weights):
            if weight <= 0:
                continue
            if not placed:
                owner[:] = [j] * slots
                counts[j] = slots
                placed.append(j)
                continue
            total = sum(weights[a] for a in placed) + weight
            surplus: dict[int, int] = {}
            for a in placed:
                keep = min(counts[a], round(slots * weights[a] / total))
                if counts[a] > keep:
                    surplus[a] = counts[a] - keep
            need = sum(surplus.values())
            if need == 0:
                placed.append(j)
                continue
            start, step = self._walk(self.names[j])
            slot = start
            for _ in range(slots):
                a = owner[slot]
                left = surplus.get(a, 0)
                if left > 0:
                    surplus[a] = left - 1
                    owner[slot] = j
                    counts[a] -= 1
                    counts[j] += 1
                    need -= 1
                    if need == 0:
                        break
                slot = (slot + step) % slots
            placed.append(j)

    def _walk(self, name: str) -> tuple[int, int]:
        """A peer's own order over the slots: ``start + k * step`` with ``step`` coprime.

        The step stays near the golden section of the ring, so the slots a peer takes
        are scattered over it (a key skipping an unhealthy peer then moves on quickly).
        """
        slots = self.slots
        h = key_hash(name)
        start = h % slots
        if slots <= 2:
            return start, 1
        base = int(slots * 0.6180339887)
        spread = max(1, slots // 16)
        step = max(1, base + (key_hash(name + "#step") % spread) - spread // 2)
        while math.gcd(step, slots) != 1:
            step += 1
        return start, step % slots or 1

    def position(self, key: str) -> int:
        """The slot ``key`` hashes to."""
        return key_hash(key) % self.slots

    def next(self, key: str, usable: Usable = _always) -> int | None:
        """The owner of ``key``'s slot, or of the first slot after it whose owner is usable."""
        counts = self.counts
        if not any(counts[i] > 0 and usable(i) for i in range(len(counts))):
            return None
        owner = self.owner
        slots = self.slots
        slot = key_hash(key) % slots
        for _ in range(slots):
            i = owner[slot]
            if i >= 0 and usable(i):
                return i
            slot = slot + 1 if slot + 1 < slots else 0
        return None  # unreachable: some usable peer owns a slot


class LeastConnections:
    """Fewest requests in flight per unit of weight; ties taken in turn.

    :meth:`acquire` and :meth:`release` count a peer's requests in flight; the
    caller releases every pick once its request is over.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = [float(w) for w in weights]
        self.active = [0] * len(self.weights)
        self._cursor = 0

    def next(self, usable: Usable = _always) -> int | None:
        n = len(self.weights)
        best = -1
        best_score = 0.0
        start = self._cursor
        for k in range(n):
            i = (start + k) % n
            weight = self.weights[i]
            if weight <= 0 or not usable(i):
                continue
            score = (self.active[i] + 1) / weight
            if best < 0 or score < best_score:
                best, best_score = i, score
        if best < 0:
            return None
        self._cursor = (best + 1) % n
        return best

    def acquire(self, i: int) -> None:
        self.active[i] += 1

    def release(self, i: int) -> None:
        if self.active[i] > 0:
            self.active[i] -= 1
