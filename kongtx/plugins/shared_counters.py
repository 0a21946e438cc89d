# -*- test-case-name: tests.unit.test_shared_counters -*-
"""The ``local`` rate-limiting counters of a node, shared by its worker processes.

Kong 0.9 counted the ``local`` policy in an nginx shared dict: one count per
node, whatever the number of nginx workers.  With worker processes, a dict per
process would let a limit through once per worker; :class:`SharedCounters`
keeps the counters in a file that every process of the node maps with
:mod:`mmap` instead (the master creates it, the workers open it; see
:func:`kongtx.plugins.ratelimit_local.share_local_counters`).

The file (:class:`CounterTable`) is a 64-byte header (magic, version, slot
count, probe window; then, at byte 24, a 64-bit count of the slots ever given to a
key, which lets a process trust the slot it last found a key in while no other
key was placed) and a fixed table of 32-byte slots: the 16-byte blake2b
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

import hashlib
import mmap
import os
import struct
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

from kongtx.clock import Clock
from kongtx.plugins.counter_slots import SlotKey, SlotTable
from kongtx.plugins.ratelimit_counters import LIFETIMES
from kongtx.plugins.ratelimit_local import LocalCounters

__all__ = [
    "DEFAULT_SLOTS",
    "DEFAULT_WINDOW",
    "BadCounterFile",
    "CounterTable",
    "SharedCounters",
    "key_digest",
]

#: slots of a new table (2 MiB of file)
DEFAULT_SLOTS = 65536
#: how many slots from its home slot a key may live in
DEFAULT_WINDOW = 32

MAGIC = b"kongtxLC"
#: 2: header word 3 counts the slots given to keys (kongtx.plugins.counter_slots)
VERSION = 2
#: magic, version, slots, window
HEADER = struct.Struct("<8sIII")
HEADER_SIZE = 64
#: key digest, expires at (epoch seconds), count
SLOT = struct.Struct("<16sdq")
SLOT_SIZE = SLOT.size
DIGEST_SIZE = 16

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
        #: the slots, read and written under the lock (compiled)
        self.core = SlotTable(self._mm, fd, self.slots, self.window, path)
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
        self.core.release()
        self._mm.close()
        os.close(self._fd)

    def _after_fork(self) -> None:
        # flock belongs to the open file description, which a forked child
        # shares with its parent: the two would not exclude each other.
        fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = self.core.fd = fd

    def read(self, digests: list[bytes], now: float) -> list[int]:
        """The live count of each digest (0 when none or expired)."""
        return self.core.read([self.slot_key(d) for d in digests], now)

    def add(
        self, digests: Sequence[bytes], lifetimes: Sequence[float], amount: int, now: float
    ) -> None:
        """Add ``amount`` to each digest's counter; a new one lives its ``lifetimes`` seconds."""
        keys = [self.slot_key(d) for d in digests]
        if len(keys) != len(lifetimes):
            raise ValueError("one lifetime a digest")
        self.core.add(keys, tuple(lifetimes), amount, now)

    def slot_key(self, digest: bytes) -> SlotKey:
        """``digest`` as :meth:`read_add` takes it (with its home slot in this table)."""
        return SlotKey(digest, self.slots)

    def read_add(
        self,
        keys: list[SlotKey],
        limits: Sequence[tuple[int, float]],
        lifetimes: Sequence[float],
        amount: int,
        now: float,
    ) -> list[int]:
        """The live count of the keys (:meth:`slot_key`) ``limits`` name (``(index,
        limit)``), in that order; when each is under its limit, ``amount`` is added to
        every key's counter as :meth:`add` does, all under one lock
        (:meth:`kongtx.plugins.counter_slots.SlotTable.read_add`, compiled: the hot path
        of the ``local`` rate-limiting policy with workers)."""
        return self.core.read_add(keys, list(limits), tuple(lifetimes), amount, now)

    def live(self, now: float) -> int:
        """How many slots hold an unexpired counter (scans the whole table)."""
        return self.core.live(now)


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
        #: the table's slots (compiled): what rate-limiting's access phase counts in
        self.core = table.core

    def stored(self, key: str) -> SlotKey:
        return SlotKey(key_digest(key), self.table.slots)

    def read_stored(self, stored: list[Any], now: float) -> list[int]:
        return self.core.read(stored, now)

    def add_stored(self, stored: list[Any], amount: int, now: float) -> None:
        self.core.add(stored, LIFETIMES, amount, now)

    def read_add_stored(
        self, stored: list[Any], limits: Sequence[tuple[int, float]], amount: int, now: float
    ) -> list[int]:
        return self.core.read_add(stored, list(limits), LIFETIMES, amount, now)

    def __len__(self) -> int:
        """Unexpired counters in the table (all processes')."""
        return self.table.live(self.clock.seconds())
