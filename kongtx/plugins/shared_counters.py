# -*- test-case-name: tests.unit.test_shared_counters -*-
"""The ``local`` rate-limiting counters of a node, shared by its worker processes.

Kong 0.9 counted the ``local`` policy in an nginx shared dict: one count per
node, whatever the number of nginx workers.  With worker processes, a dict per
process would let a limit through once per worker; :class:`SharedCounters`
keeps the counters in a file that every process of the node maps with
:mod:`mmap` instead (the master creates it, the workers open it; see
:func:`kongtx.plugins.ratelimit_local.share_local_counters`).

The file (:class:`CounterTable`) is a 64-byte header (magic, version, slot
count, probe window) and a fixed table of 32-byte slots: the 16-byte blake2b
digest of a key, its expiry time (epoch seconds, a double) and its count (a
signed 64-bit integer).  A key lives in the first slot of its probe window (the
``window`` slots from its digest's home slot) that was free when it was added:

* a lookup searches the whole window for the key (an expired slot does not end
  it; a slot never used does, as no key was ever placed beyond one);
* an expired slot is free: a key not found takes the first free slot of its
  window; when none is, the slot that expires soonest is evicted (its count is
  lost, so the limit is undercounted: a warning is logged once), hence size the
  table for the live counters (six a client per API, the longest living a year).

Every operation holds ``fcntl.flock(LOCK_EX)`` on the file, for all the keys of
one call, so increments from different processes are never lost.  flock and
the mapped memory are fast local calls (a few microseconds, no disk I/O: the
pages are shared memory, written back lazily by the kernel), not blocking I/O
in the sense of the house rules, so they run on the reactor thread (the one
thread of a process that may use the table: flock does not exclude threads
sharing an open file; a forked child reopens its own, see
``CounterTable._after_fork``).  Time is
the node's :class:`~kongtx.clock.Clock` (wall time, the same in every process);
nothing here calls the reactor.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.plugins.ratelimit_counters import LIFETIMES
from kongtx.plugins.ratelimit_local import LocalCounters, within

__all__ = [
    "DEFAULT_SLOTS",
    "DEFAULT_WINDOW",
    "BadCounterFile",
    "CounterTable",
    "SharedCounters",
    "key_digest",
]

log = logger("kongtx.plugins.shared_counters")

#: slots of a new table (2 MiB of file)
DEFAULT_SLOTS = 65536
#: how many slots from its home slot a key may live in
DEFAULT_WINDOW = 32

MAGIC = b"kongtxLC"
VERSION = 1
#: magic, version, slots, window
HEADER = struct.Struct("<8sIII")
HEADER_SIZE = 64
#: key digest, expires at (epoch seconds), count
SLOT = struct.Struct("<16sdq")
SLOT_SIZE = SLOT.size
EXPIRY = struct.Struct("<d")
COUNT = struct.Struct("<q")
DIGEST_SIZE = 16
COUNT_AT = 24
COUNT_MIN, COUNT_MAX = -(2**63), 2**63 - 1

# open tables, given a lock of their own in a forked child (see CounterTable._after_fork)
_OPEN: weakref.WeakSet[CounterTable] = weakref.WeakSet()


class BadCounterFile(ValueError):
    """The file is not a counter table this version of kongtx can share."""


def key_digest(key: str) -> bytes:
    """The 16-byte digest a counter's key is stored under."""
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_SIZE).digest()


class CounterTable:
    """A fixed table of expiring counters in a memory-mapped file, locked with flock.

    Args:
        path: the file.
        create: True makes a new, empty table there (replacing any file
            atomically: a process that still maps the old one keeps it); False
            opens an existing table, refused with :class:`BadCounterFile` when
            its header is not ours (or ``slots`` is given and differs).
        slots: the table's size, when created (default :data:`DEFAULT_SLOTS`).
        window: the probe window, when created (default :data:`DEFAULT_WINDOW`,
            at most ``slots``); an opened table uses the one in its header.
    """

    def __init__(
        self, path: str, *, create: bool, slots: int | None = None, window: int | None = None
    ) -> None:
        self.path = path
        if create:
            self._create(path, slots or DEFAULT_SLOTS, window or DEFAULT_WINDOW)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.slots, self.window = self._check_header(fd, slots)
            self._mm = mmap.mmap(fd, HEADER_SIZE + self.slots * SLOT.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._warned = False
        _OPEN.add(self)

    @staticmethod
    def _create(path: str, slots: int, window: int) -> None:
        if slots < 1 or window < 1:
            raise ValueError(
                f"a counter table needs slots and a window >= 1, not {slots}, {window}"
            )
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".local_counters.", dir=directory)
        try:
            os.pwrite(fd, HEADER.pack(MAGIC, VERSION, slots, min(window, slots)), 0)
            os.ftruncate(fd, HEADER_SIZE + slots * SLOT.size)  # zeroes: every slot never used
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)

    def _check_header(self, fd: int, slots: int | None) -> tuple[int, int]:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size or size < HEADER_SIZE:
            raise BadCounterFile(f"{self.path}: too short for a counter table")
        magic, version, found, window = HEADER.unpack(head)
        if magic != MAGIC:
            raise BadCounterFile(f"{self.path}: not a kongtx counter table")
        if version != VERSION:
            raise BadCounterFile(f"{self.path}: counter table version {version}, not {VERSION}")
        if found < 1 or not 1 <= window <= found or size != HEADER_SIZE + found * SLOT.size:
            raise BadCounterFile(f"{self.path}: counter table header and size do not agree")
        if slots is not None and slots != found:
            raise BadCounterFile(f"{self.path}: counter table has {found} slots, not {slots}")
        return found, window

    def close(self) -> None:
        """Unmap and close the file (the table stays for the other processes)."""
        _OPEN.discard(self)
        self._mm.close()
        os.close(self._fd)

    def _after_fork(self) -> None:
        # flock belongs to the open file description, which a forked child
        # shares with its parent: the two would not exclude each other.
        fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = fd

    def read(self, digests: list[bytes], now: float) -> list[int]:
        """The live count of each digest (0 when none or expired)."""
        mm, fd = self._mm, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return [self._find(mm, digest, now)[1] for digest in digests]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def add(
        self, digests: Sequence[bytes], lifetimes: Sequence[float], amount: int, now: float
    ) -> None:
        """Add ``amount`` to each digest's counter; a new one lives its ``lifetimes`` seconds."""
        mm, fd = self._mm, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            for digest, lifetime in zip(digests, lifetimes, strict=True):
                off, count = self._find(mm, digest, now)
                if off >= 0:
                    total = count + amount
                    if not COUNT_MIN <= total <= COUNT_MAX:
                        total = COUNT_MIN if total < 0 else COUNT_MAX
                    COUNT.pack_into(mm, off + COUNT_AT, total)
                else:
                    off = self._free_slot(mm, digest, now)
                    total = min(max(amount, COUNT_MIN), COUNT_MAX)
                    SLOT.pack_into(mm, off, digest, now + lifetime, total)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def slot_key(self, digest: bytes) -> tuple[bytes, int]:
        """``digest`` with the offset of its home slot: what :meth:`read_add` takes."""
        return digest, HEADER_SIZE + int.from_bytes(digest[:8], "little") % self.slots * SLOT_SIZE

    def read_add(
        self,
        keys: Sequence[tuple[bytes, int]],
        limits: Sequence[tuple[int, float]],
        lifetimes: Sequence[float],
        amount: int,
        now: float,
    ) -> list[int]:
        """The live count of the keys (:meth:`slot_key`) ``limits`` name (``(index,
        limit)``), in that order; when each is under its limit, ``amount`` is added to
        every key's counter as :meth:`add` does, all under one lock.

        The hot path of the ``local`` rate-limiting policy with workers: one lock, each
        slot unpacked once (the lookup of :meth:`_find`, inlined, from the home slot).
        """
        mm, fd = self._mm, self._fd
        unpack, window = SLOT.unpack_from, self.window
        end = HEADER_SIZE + self.slots * SLOT_SIZE
        offsets: list[int] = []
        counts: list[int] = []
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            for digest, off in keys:
                count = 0
                for _ in range(window):
                    found, expires, count = unpack(mm, off)
                    if found == digest and expires > now:
                        break
                    if expires == 0.0:  # never used: no key was placed beyond it
                        off = -1
                        break
                    off += SLOT_SIZE
                    if off == end:
                        off = HEADER_SIZE
                else:
                    off = -1
                offsets.append(off)
                counts.append(count if off >= 0 else 0)
            values = [counts[i] for i, _ in limits]
            if within(limits, values):
                missing: list[int] = []
                for i in range(len(keys)):
                    off = offsets[i]
                    if off >= 0:
                        total = counts[i] + amount
                        if not COUNT_MIN <= total <= COUNT_MAX:
                            total = COUNT_MIN if total < 0 else COUNT_MAX
                        COUNT.pack_into(mm, off + COUNT_AT, total)
                    else:
                        missing.append(i)
                # new counters last: placing one may evict another's slot, found above
                for i in missing:
                    digest = keys[i][0]
                    off = self._free_slot(mm, digest, now)
                    SLOT.pack_into(
                        mm, off, digest, now + lifetimes[i], min(max(amount, COUNT_MIN), COUNT_MAX)
                    )
            return values
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _find(self, mm: mmap.mmap, digest: bytes, now: float) -> tuple[int, int]:
        """The offset and count of ``digest``'s live slot, or ``(-1, 0)``."""
        slots, unpack = self.slots, SLOT.unpack_from
        index = int.from_bytes(digest[:8], "little") % slots
        for _ in range(self.window):
            off = HEADER_SIZE + index * SLOT_SIZE
            found, expires, count = unpack(mm, off)
            if found == digest and expires > now:
                return off, count
            if expires == 0.0:  # never used: no key was placed beyond it
                break
            index += 1
            if index == slots:
                index = 0
        return -1, 0

    def _free_slot(self, mm: mmap.mmap, digest: bytes, now: float) -> int:
        """The first free (expired or never used) slot of the window, else the one
        expiring soonest (evicted)."""
        slots = self.slots
        index = int.from_bytes(digest[:8], "little") % slots
        soonest, soonest_at = -1, 0.0
        for _ in range(self.window):
            off = HEADER_SIZE + index * SLOT_SIZE
            (expires,) = EXPIRY.unpack_from(mm, off + DIGEST_SIZE)
            if expires <= now:
                return off
            if soonest < 0 or expires < soonest_at:
                soonest, soonest_at = off, expires
            index += 1
            if index == slots:
                index = 0
        if not self._warned:
            self._warned = True
            log.warn(
                "local rate-limiting counters: the table of {path} ({slots} slots) is full "
                "around a key; evicting the counters that expire soonest (limits undercount)",
                path=self.path,
                slots=slots,
            )
        return soonest

    def live(self, now: float) -> int:
        """How many slots hold an unexpired counter (scans the whole table)."""
        mm, fd = self._mm, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return sum(1 for _, expires, _ in SLOT.iter_unpack(mm[HEADER_SIZE:]) if expires > now)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _reopen_after_fork() -> None:
    for table in list(_OPEN):
        table._after_fork()


os.register_at_fork(after_in_child=_reopen_after_fork)


class SharedCounters(LocalCounters):
    """The ``local`` policy in a :class:`CounterTable`: one count per node, whatever
    the number of processes counting (:class:`~kongtx.plugins.ratelimit_local.ProcessCounters`'
    semantics: a missing or expired counter reads 0, and an add to it starts it
    again at the amount, living one period)."""

    def __init__(self, clock: Clock, table: CounterTable) -> None:
        super().__init__(clock)
        self.table = table

    def stored(self, key: str) -> tuple[bytes, int]:
        return self.table.slot_key(key_digest(key))

    def read_stored(self, stored: list[Any], now: float) -> list[int]:
        return self.table.read([digest for digest, _ in stored], now)

    def add_stored(self, stored: list[Any], amount: int, now: float) -> None:
        self.table.add([digest for digest, _ in stored], LIFETIMES, amount, now)

    def read_add_stored(
        self, stored: list[Any], limits: Sequence[tuple[int, float]], amount: int, now: float
    ) -> list[int]:
        return self.table.read_add(stored, limits, LIFETIMES, amount, now)

    def __len__(self) -> int:
        """Unexpired counters in the table (all processes')."""
        return self.table.live(self.clock.seconds())
