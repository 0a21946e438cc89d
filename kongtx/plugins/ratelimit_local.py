# -*- test-case-name: tests.unit.test_plugin_rate_limiting,tests.unit.test_shared_counters -*-
"""The ``local`` rate-limiting policy: this node's counters, read and added to synchronously.

Counters keyed like Kong's shared dict
(``ratelimit:<api_id>:<identifier>:<period_start_ms>:<period>``), each entry expiring
one period length after it was created: a dict in this process
(:class:`ProcessCounters`), or, once :func:`share_local_counters` was called, a table in
a memory-mapped file shared by the node's worker processes
(:mod:`kongtx.plugins.shared_counters`), so that a limit is per node as in Kong's nginx
shared dict.  Exact on one node, and synchronous (:meth:`LocalCounters.usage_now`), so
the hot path allocates no Deferred.  Nodes do not share it.

Why a node-wide registry keyed by the clock: handlers are rebuilt whenever their plugin
row changes, but the ``local`` counters must outlive them; the node's one
:class:`~kongtx.clock.Clock` identifies the node.
"""

from __future__ import annotations

import weakref
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kongtx.clock import Clock
from kongtx.plugins.ratelimit_counters import PERIOD_INDEX, PERIODS, Counters
from kongtx.plugins.ratelimit_table import CountTable

if TYPE_CHECKING:
    from kongtx.plugins.shared_counters import CounterTable

__all__ = [
    "LocalCounters",
    "ProcessCounters",
    "local_counters",
    "share_local_counters",
    "unshare_local_counters",
    "within",
]

#: client rows a LocalCounters remembers the keys of (forgotten all at once beyond this)
ROW_CACHE = 4096


class LocalCounters(Counters):
    """The ``local`` policy: this node's counters, read and added to synchronously.

    Exact, each counter expiring one period length after it was created.  Two
    stores: :class:`ProcessCounters` (a dict in this process, the default) and
    :class:`~kongtx.plugins.shared_counters.SharedCounters` (a table in a
    memory-mapped file that every worker process of the node shares, after
    :func:`share_local_counters`).  The handlers take the synchronous path for
    both (:meth:`usage_now`, :meth:`increment_now`, :meth:`count_within`).

    A store holds a counter under its *stored key* (:meth:`stored`: the key itself,
    or its digest), and remembers the six stored keys of a client's counters for the
    current second (:meth:`row`): the requests of one second build no key.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        #: (api_id, identifier, name) -> (the starts its row is for, the row)
        self._rows: dict[tuple[str, str, str | None], tuple[Mapping[str, int], list[Any]]] = {}

    def row(
        self, api_id: str, identifier: str, starts: Mapping[str, int], name: str | None = None
    ) -> list[Any]:
        """The stored keys of the six counters of one client, in :data:`PERIODS` order.

        Remembered while ``starts`` is the same mapping (:func:`period_starts` gives
        the same one for a whole second), at most :data:`ROW_CACHE` rows (then all are
        forgotten at once).
        """
        rows = self._rows
        found = rows.get((api_id, identifier, name))
        if found is not None and found[0] is starts:
            return found[1]
        if len(rows) >= ROW_CACHE:
            rows.clear()
        key, stored = self.key, self.stored
        keys = [stored(key(api_id, identifier, starts[p], p, name)) for p in PERIODS]
        rows[(api_id, identifier, name)] = (starts, keys)
        return keys

    def usage_now(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None = None,
    ) -> dict[str, int]:
        """:meth:`usage` without a Deferred (the hot path)."""
        row = self.row(api_id, identifier, starts, name)
        values = self.read_stored([row[PERIOD_INDEX[p]] for p in periods], self.clock.seconds())
        return dict(zip(periods, values, strict=True))

    def increment_now(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        amount: int,
        name: str | None = None,
    ) -> None:
        """:meth:`increment` without a Deferred."""
        self.add_stored(self.row(api_id, identifier, starts, name), amount, self.clock.seconds())

    def count_within(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        limits: Sequence[tuple[int, float]],
        amount: int,
    ) -> list[int]:
        """rate-limiting's access phase in one step: the usage of each limited period
        (``limits``: ``(index in PERIODS, limit)``), in that order; when every one is
        under its limit (``limit - usage > 0``), ``amount`` is added to all six.

        The same as :meth:`usage_now` then, if allowed, :meth:`increment_now`, but done
        at once (one lock of the shared table), so that no other process counts between.
        """
        row = self.row(api_id, identifier, starts, None)
        return self.read_add_stored(row, limits, amount, self.clock.seconds())

    def read_now(self, keys: list[str]) -> list[int]:
        """:meth:`read` without a Deferred: an expired counter reads 0."""
        stored = self.stored
        return self.read_stored([stored(k) for k in keys], self.clock.seconds())

    def add_now(self, keys: list[str], amount: int) -> None:
        """:meth:`add` without a Deferred: an expired counter starts again at ``amount``.

        ``keys`` are one a period, in :data:`PERIODS` order (each lives that period).
        """
        stored = self.stored
        self.add_stored([stored(k) for k in keys], amount, self.clock.seconds())

    @abstractmethod
    def stored(self, key: str) -> Any:
        """What the counter of ``key`` is stored under."""

    @abstractmethod
    def read_stored(self, stored: list[Any], now: float) -> list[int]:
        """The live count of each stored key at ``now`` (0 when none or expired)."""

    @abstractmethod
    def add_stored(self, stored: list[Any], amount: int, now: float) -> None:
        """Add ``amount`` to the counter of each stored key (one a period, in
        :data:`PERIODS` order): an expired one starts again at ``amount``, living its period."""

    def read_add_stored(
        self, stored: list[Any], limits: Sequence[tuple[int, float]], amount: int, now: float
    ) -> list[int]:
        """:meth:`count_within` on a row of stored keys (atomic in one process)."""
        values = self.read_stored([stored[i] for i, _ in limits], now)
        if within(limits, values):
            self.add_stored(stored, amount, now)
        return values

    @abstractmethod
    def __len__(self) -> int:
        """How many counters are held (tests and diagnostics)."""

    async def read(self, keys: list[Any]) -> list[int]:
        return self.read_now(keys)

    async def add(self, keys: list[Any], amount: int) -> None:
        self.add_now(keys, amount)


def within(limits: Sequence[tuple[int, float]], values: Sequence[int]) -> bool:
    """Whether every limited period has room left (Kong: stop when ``limit - usage <= 0``)."""
    for (_, limit), value in zip(limits, values, strict=True):
        if limit - value <= 0:
            return False
    return True


class ProcessCounters(LocalCounters):
    """The ``local`` counters in a dict of this process (a node with one process), kept
    in a compiled :class:`~kongtx.plugins.ratelimit_table.CountTable` (:attr:`table`)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.table = CountTable()

    def stored(self, key: str) -> str:
        return key

    def read_stored(self, stored: list[Any], now: float) -> list[int]:
        return self.table.read(stored, now)

    def add_stored(self, stored: list[Any], amount: int, now: float) -> None:
        self.table.add(stored, amount, now)

    def read_add_stored(
        self, stored: list[Any], limits: Sequence[tuple[int, float]], amount: int, now: float
    ) -> list[int]:
        return self.table.read_add(stored, limits, amount, now)

    def __len__(self) -> int:
        """Counters held, including expired ones not yet swept (at most a second old)."""
        return len(self.table.counts)


# node-wide state, keyed by the node's Clock (see the module docstring)
_LOCAL: weakref.WeakKeyDictionary[Clock, LocalCounters] = weakref.WeakKeyDictionary()
#: the file-backed table every process of the node counts in (share_local_counters)
_shared_table: CounterTable | None = None


def share_local_counters(path: str, *, create: bool, slots: int | None = None) -> None:
    """Count ``local`` in the table of ``path``, shared with the node's other processes.

    The node's master calls it with ``create=True`` (a fresh table, ``slots``
    counters, default :data:`~kongtx.plugins.shared_counters.DEFAULT_SLOTS`), then
    each worker with ``create=False`` (the table must exist and be one of ours,
    else :class:`~kongtx.plugins.shared_counters.BadCounterFile`).  From then on
    :func:`local_counters` returns that table's counters to every caller in this
    process: call it before any plugin is built (a handler keeps the counters it
    was built with).  Without it each process counts in its own dict.
    """
    from kongtx.plugins.shared_counters import CounterTable

    global _shared_table
    _shared_table = CounterTable(path, create=create, slots=slots)
    _LOCAL.clear()


def unshare_local_counters() -> None:
    """Back to per-process dicts, closing the shared table (tests; nothing may still use it)."""
    global _shared_table
    table, _shared_table = _shared_table, None
    _LOCAL.clear()
    if table is not None:
        table.close()


def local_counters(clock: Clock) -> LocalCounters:
    """The node's one ``local`` counter store: the shared table, else a dict."""
    found = _LOCAL.get(clock)
    if found is None:
        if _shared_table is not None:
            from kongtx.plugins.shared_counters import SharedCounters

            found = SharedCounters(clock, _shared_table)
        else:
            found = ProcessCounters(clock)
        _LOCAL[clock] = found
    return found
