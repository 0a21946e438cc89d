# -*- test-case-name: tests.unit.test_shared_counters -*-
"""The shared ``local`` counters' slots, read and written under the table's lock: compiled.

:class:`~kongtx.plugins.shared_counters.CounterTable` opens, checks and maps the file;
this module is what a request runs (issue 8): :meth:`SlotTable.read_add` takes the
file's flock once, finds each key's slot and counts in it through two memoryviews of
the mapping (64-bit words and doubles: no struct, no tuple or bytes per slot).  The
layout is :mod:`kongtx.plugins.shared_counters`' (a 64-byte header, then 32-byte
slots: the key's 16-byte digest as two words, its expiry, its count), and so are the
rules: a key lives in the first slot of its probe window that was free when it was
added; a lookup passes expired slots and stops at one never used; a missing key
takes the first free (expired or never used) slot of its window, else evicts the
one expiring soonest (warned once).  The lock is held only for the slots' work, so
the other workers wait on it as little as possible.

Kept apart from ``shared_counters`` because that module's classes hold the file and
are not on the hot path; nothing subclasses these.
"""

from __future__ import annotations

import fcntl
import mmap
from typing import Final

from kongtx.log import logger

__all__ = ["SlotKey", "SlotTable"]

log = logger("kongtx.plugins.shared_counters")

#: the header, in 64-bit words
HEADER_WORDS: Final = 8
#: a slot, in 64-bit words: digest (2), expiry (1, a double), count (1)
SLOT_WORDS: Final = 4
#: the header word counting placements (a slot given to a key): hints of an older one are stale
GENERATION_WORD: Final = 3
COUNT_MIN: Final = -(2**63)
COUNT_MAX: Final = 2**63 - 1
#: counts within this bound need no saturation check against the 64-bit bounds
SMALL: Final = 2**60
LOCK_EX: Final[int] = fcntl.LOCK_EX
LOCK_UN: Final[int] = fcntl.LOCK_UN


def _clamped(total: int) -> int:
    """A count as a signed 64-bit slot holds it (saturated)."""
    if -SMALL < total < SMALL:
        return total
    if total > COUNT_MAX:
        return COUNT_MAX
    if total < COUNT_MIN:
        return COUNT_MIN
    return total


class SlotKey:
    """A counter's key as a table stores it: its 16-byte digest (:attr:`digest`, and as
    two signed little-endian words) and the word where its probe window starts.

    It also remembers the slot it was last found in (:attr:`slot`), in which table, at
    which of its generations and the slot's expiry then: as long as no key was given a
    slot since (the table's generation word is the same), the key is still there with
    that expiry, live if it is ahead, else nowhere (a key has at most one live slot).
    """

    def __init__(self, digest: bytes, slots: int) -> None:
        self.digest = digest
        self.lo: int = int.from_bytes(digest[0:8], "little", signed=True)
        self.hi: int = int.from_bytes(digest[8:16], "little", signed=True)
        self.home: int = HEADER_WORDS + int.from_bytes(digest[0:8], "little") % slots * SLOT_WORDS
        #: the word of the slot it was found in, the table and its generation then, and
        #: the slot's expiry (written only when a key is given the slot: a new generation)
        self.slot = -1
        self.table: SlotTable | None = None
        self.generation = -1
        self.expires = 0.0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SlotKey) and other.digest == self.digest and other.home == self.home
        )

    def __hash__(self) -> int:
        return hash((self.digest, self.home))

    def __repr__(self) -> str:
        return f"SlotKey({self.digest.hex()}, home word {self.home})"


class SlotTable:
    """The slots of a mapped counter table (``mm``, ``slots`` of them, probe ``window``),
    locked with flock on ``fd`` (:attr:`fd` is replaced in a forked child)."""

    def __init__(self, mm: mmap.mmap, fd: int, slots: int, window: int, path: str) -> None:
        self.fd = fd
        self.words: memoryview[int] = memoryview(mm).cast("q")
        self.floats: memoryview[float] = memoryview(mm).cast("d")
        self.slots = slots
        self.window = window
        self.path = path
        self.end: int = HEADER_WORDS + slots * SLOT_WORDS
        self.warned = False

    def release(self) -> None:
        """Let go of the mapping (before it is closed)."""
        self.words.release()
        self.floats.release()

    def read(self, keys: list[SlotKey], now: float) -> list[int]:
        """The live count of each key (0 when none or expired)."""
        words = self.words
        out: list[int] = []
        fd = self.fd
        fcntl.flock(fd, LOCK_EX)
        try:
            for key in keys:
                w = self.find(key, now)
                out.append(words[w + 3] if w >= 0 else 0)
        finally:
            fcntl.flock(fd, LOCK_UN)
        return out

    def add(
        self, keys: list[SlotKey], lifetimes: tuple[float, ...], amount: int, now: float
    ) -> None:
        """Add ``amount`` to each key's counter; a new one lives its ``lifetimes`` seconds."""
        fd = self.fd
        fcntl.flock(fd, LOCK_EX)
        try:
            for i in range(len(keys)):
                key = keys[i]
                w = self.find(key, now)
                if w >= 0:
                    self.words[w + 3] = _clamped(self.words[w + 3] + amount)
                else:
                    self.place(key, now + lifetimes[i], amount, now)
        finally:
            fcntl.flock(fd, LOCK_UN)

    def read_add(
        self,
        keys: list[SlotKey],
        limits: list[tuple[int, float]],
        lifetimes: tuple[float, ...],
        amount: int,
        now: float,
    ) -> list[int]:
        """The live count of the keys ``limits`` name (``(index, limit)``), in that
        order; when each is under its limit (``limit - count > 0``), ``amount`` is added
        to every key's counter as :meth:`add` does, the missing ones placed last (placing
        one may evict another's slot), all under one lock."""
        words = self.words
        values: list[int] = []
        count = len(keys)
        fd = self.fd
        fcntl.flock(fd, LOCK_EX)
        try:
            generation = words[GENERATION_WORD]
            if self.hinted(keys, generation, now):
                # every key live in the slot it was found in: count there
                room = True
                for index, limit in limits:
                    value = words[keys[index].slot + 3]
                    values.append(value)
                    if limit - value <= 0:
                        room = False
                if room:
                    for key in keys:
                        w = key.slot + 3
                        words[w] = _clamped(words[w] + amount)
                return values
            offsets: list[int] = []
            for i in range(count):
                key = keys[i]
                w = self.find(key, now)
                offsets.append(w)
                if w >= 0:  # a hint, made stale by any key placed below
                    key.slot = w
                    key.table = self
                    key.generation = generation
                    key.expires = self.floats[w + 2]
            room = True
            for index, limit in limits:
                w = offsets[index]
                value = words[w + 3] if w >= 0 else 0
                values.append(value)
                if limit - value <= 0:
                    room = False
            if room:
                missing = False
                for i in range(count):
                    w = offsets[i]
                    if w >= 0:
                        words[w + 3] = _clamped(words[w + 3] + amount)
                    else:
                        missing = True
                if missing:
                    for i in range(count):
                        if offsets[i] < 0:
                            self.place(keys[i], now + lifetimes[i], amount, now)
        finally:
            fcntl.flock(fd, LOCK_UN)
        return values

    def hinted(self, keys: list[SlotKey], generation: int, now: float) -> bool:
        """Whether every key is live in the slot it was last found in (the lock held)."""
        for key in keys:
            if key.generation != generation or key.table is not self or key.expires <= now:
                return False
        return True

    def find(self, key: SlotKey, now: float) -> int:
        """The word of ``key``'s live slot, or -1 (the lock held)."""
        words = self.words
        floats = self.floats
        lo = key.lo
        hi = key.hi
        w = key.home
        end = self.end
        for _ in range(self.window):
            expires = floats[w + 2]
            if words[w] == lo and words[w + 1] == hi and expires > now:
                return w
            if expires == 0.0:  # never used: no key was placed beyond it
                return -1
            w += SLOT_WORDS
            if w == end:
                w = HEADER_WORDS
        return -1

    def place(self, key: SlotKey, expires: float, amount: int, now: float) -> None:
        """Start ``key``'s counter at ``amount`` in a free slot of its window (the lock held)."""
        w = self.free_slot(key, now)
        words = self.words
        generation = words[GENERATION_WORD]
        words[GENERATION_WORD] = generation + 1 if generation < COUNT_MAX else COUNT_MIN
        words[w] = key.lo
        words[w + 1] = key.hi
        self.floats[w + 2] = expires
        words[w + 3] = _clamped(amount)

    def free_slot(self, key: SlotKey, now: float) -> int:
        """The first free (expired or never used) slot of ``key``'s window, else the one
        expiring soonest (evicted, warned once)."""
        floats = self.floats
        w = key.home
        end = self.end
        soonest = -1
        soonest_at = 0.0
        for _ in range(self.window):
            expires = floats[w + 2]
            if expires <= now:
                return w
            if soonest < 0 or expires < soonest_at:
                soonest = w
                soonest_at = expires
            w += SLOT_WORDS
            if w == end:
                w = HEADER_WORDS
        if not self.warned:
            self.warned = True
            log.warn(
                "local rate-limiting counters: the table of {path} ({slots} slots) is full "
                "around a key; evicting the counters that expire soonest (limits undercount)",
                path=self.path,
                slots=self.slots,
            )
        return soonest

    def live(self, now: float) -> int:
        """How many slots hold an unexpired counter (scans the whole table)."""
        floats = self.floats
        found = 0
        fd = self.fd
        fcntl.flock(fd, LOCK_EX)
        try:
            for w in range(HEADER_WORDS + 2, self.end, SLOT_WORDS):
                if floats[w] > now:
                    found += 1
        finally:
            fcntl.flock(fd, LOCK_UN)
        return found
