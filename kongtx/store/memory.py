# -*- test-case-name: tests.store.test_contract -*-
"""An in-memory store held to the same contract as the real backends.

Why it exists: unit tests of the DAO, the Admin API, the caches and the cluster
need a store that answers synchronously (every method completes before it
returns, so ``SynchronousTestCase.successResultOf`` works) and keeps time on an
injected :class:`~kongtx.clock.Clock` (TTLs expire when a test advances
``task.Clock``).  The contract suite (tests/store) runs it beside sqlite,
Postgres and Cassandra so that a test passing here means the same thing there:
uniqueness, foreign keys, cascades, TTLs, paging tokens, filters with ``None``
and the change log all behave alike.

Two deliberate conveniences: tables exist from construction (``migrate`` only
records names, there is no SQL to run), and :meth:`MemoryStore.peer` gives
another node's store over the same data (its own ``origin``), for in-process
"two nodes" tests.  ``available = False`` makes every call raise
:class:`StoreUnavailable`, for outage tests.

The data itself (rows, unique indexes, the change log) is
:class:`~kongtx.store.memory_data.MemoryData`; this class is the IStore over it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.store.common import cascade_rows, children_of
from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    IStore,
    Page,
    Row,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.memory_data import Entry, Key, MemoryData, copy_row, normalise, primary_key
from kongtx.store.rules import (
    TagFilter,
    after_position,
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    decode_offset,
    encode_offset,
    sort_key,
)


@implementer(IStore)
class MemoryStore:
    """An :class:`IStore` in a few dicts; every method completes synchronously."""

    name = "memory"

    def __init__(
        self,
        tables: Mapping[str, Table],
        origin: str,
        clock: Clock,
        *,
        _state: MemoryData | None = None,
    ) -> None:
        check_tables(tables)
        self.tables = dict(tables)
        self._children = children_of(self.tables)
        self.origin = origin
        self.clock = clock
        #: set to False to make every call fail with StoreUnavailable (outage tests).
        self.available = True
        self._state = _state if _state is not None else MemoryData.empty(self.tables)

    def peer(self, origin: str) -> MemoryStore:
        """Another node's store over the same data, stamping events with ``origin``."""
        return MemoryStore(self.tables, origin, self.clock, _state=self._state)

    # ------------------------------------------------------------------ helpers

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("the memory store was made unavailable")

    def _table(self, name: str) -> Table:
        self._check()
        return self.tables[name]

    def _expire(self) -> None:
        """Forget every row whose TTL has passed (real backends hide then delete them)."""
        now = self.clock.seconds()
        for table in self.tables.values():
            if not table.ttl:
                continue
            rows = self._state.rows[table.name]
            gone = [k for k, e in rows.items() if e.expire_at is not None and e.expire_at <= now]
            for k in gone:
                self._state.forget(table, k)

    def _find(self, table: Table, key: Mapping[str, Any]) -> Row | None:
        check_key(table, key)
        self._expire()
        rows = self._state.rows[table.name]
        if all(key.get(c) is not None for c in table.primary_key):
            entry = rows.get(tuple(normalise(table, c, key[c]) for c in table.primary_key))
            candidate = entry.row if entry is not None else None
        else:
            col = next(c for c in table.unique if key.get(c) is not None)
            pk = self._state.unique[(table.name, col)].get(normalise(table, col, key[col]))
            candidate = rows[pk].row if pk is not None else None
        if candidate is None or not self._matches(table, candidate, key):
            return None
        return candidate

    @staticmethod
    def _matches(table: Table, row: Row, filters: Mapping[str, Any]) -> bool:
        return all(
            v.matches(row[c]) if isinstance(v, TagFilter) else row[c] == normalise(table, c, v)
            for c, v in filters.items()
        )

    def _filtered(self, table: Table, filters: Mapping[str, Any]) -> list[Row]:
        check_columns(table, filters)
        self._expire()
        rows = [e.row for e in self._state.rows[table.name].values()]
        matched = [r for r in rows if self._matches(table, r, filters)]
        matched.sort(key=lambda r: sort_key(table, r))
        return matched

    def _event(self, collection: str, kind: ChangeType, old: Row | None, new: Row | None) -> None:
        self._state.record(self.origin, self.clock.millis(), collection, kind, old, new)

    @staticmethod
    def _copy_event(event: ChangeEvent) -> ChangeEvent:
        return replace(event, old=copy_row(event.old), new=copy_row(event.new))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Nothing to connect to."""
        self._check()

    async def stop(self) -> None:
        """Nothing to release: the memory store schedules no timers."""

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Record the names not run yet (there is no schema to change) and return them."""
        self._check()
        ran: list[str] = []
        for identifier, entries in migrations.items():
            done = self._state.migrations.setdefault(identifier, [])
            for name, _script in entries:
                if name not in done:
                    done.append(name)
                    ran.append(f"{identifier}: {name}")
        return ran

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names recorded by :meth:`migrate`."""
        self._check()
        return {k: list(v) for k, v in self._state.migrations.items() if v}

    async def reset(self) -> None:
        """Forget every row, event and migration (shared with peers, like a real database)."""
        self._check()
        fresh = MemoryData.empty(self.tables)
        self._state.rows = fresh.rows
        self._state.unique = fresh.unique
        self._state.events = []
        self._state.seqs = {}
        self._state.migrations = {}

    async def ping(self) -> None:
        """Raises StoreUnavailable when a test made the store unavailable."""
        self._check()

    # ------------------------------------------------------------------ rows

    async def insert(self, table: str, row: Row, ttl: int | None = None) -> Row:
        """Insert ``row`` after the same unique and foreign-key checks as the real stores."""
        t = self._table(table)
        check_columns(t, row)
        check_ttl(t, ttl)
        full = {c: normalise(t, c, row.get(c)) for c in t.column_names}
        for c in t.primary_key:
            if full[c] is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        self._expire()
        pk = primary_key(t, full)
        if pk in self._state.rows[table]:
            col = ", ".join(t.primary_key)
            raise UniqueViolation(col, ", ".join(str(v) for v in pk))
        self._state.check_constraints(self.tables, t, full, None)
        expire_at = self.clock.seconds() + ttl if ttl is not None else None
        self._state.put(t, full, expire_at)
        self._event(table, "create", None, full)
        return copy.deepcopy(full)

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row named by its primary key or one unique column, or ``None``."""
        t = self._table(table)
        return copy_row(self._find(t, key))

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every live row matching ``filters``, in listing order."""
        t = self._table(table)
        return [copy.deepcopy(r) for r in self._filtered(t, filters)]

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Up to ``size`` rows after the ``offset`` position, and the token for the next page."""
        t = self._table(table)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        position = decode_offset(t, offset) if offset is not None else None
        matched = self._filtered(t, filters)
        rest = (
            matched if position is None else [r for r in matched if after_position(t, r, position)]
        )
        rows = rest[:size]
        token = encode_offset(t, rows[-1]) if len(rest) > size else None
        return Page(rows=[copy.deepcopy(r) for r in rows], total=len(matched), offset=token)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """How many live rows match ``filters``."""
        t = self._table(table)
        return len(self._filtered(t, filters))

    async def update(
        self, table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Merge ``values`` into the row named by ``key``; ``ttl`` (if given) restarts its clock."""
        t = self._table(table)
        check_columns(t, values)
        check_ttl(t, ttl)
        old = self._find(t, key)
        if old is None:
            return None
        new = dict(old)
        new.update({c: normalise(t, c, v) for c, v in values.items()})
        pk = primary_key(t, old)
        if primary_key(t, new) != pk:
            raise ValueError(f"{table}: the primary key of a row cannot change")
        self._state.check_constraints(self.tables, t, new, pk)
        entry = self._state.rows[table][pk]
        expire_at = self.clock.seconds() + ttl if ttl is not None else entry.expire_at
        self._state.put(t, new, expire_at)
        self._event(table, "update", old, new)
        return copy.deepcopy(new)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the named row and every row that references it, the named row first."""
        t = self._table(table)
        row = self._find(t, key)
        if row is None:
            return []
        doomed = await cascade_rows(self._children, t, row, self._dependants)
        for dt, drow in doomed:
            self._state.forget(dt, primary_key(dt, drow))
            self._event(dt.name, "delete", drow, None)
        return [(dt.name, copy.deepcopy(drow)) for dt, drow in doomed]

    async def _dependants(self, table: Table, column: str, value: Any) -> list[Row]:
        return self._filtered(table, {column: value})

    # ------------------------------------------------------------------ change log

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` after ``seq``, oldest first."""
        self._check()
        found = [e for e in self._state.events if e.origin == origin and e.seq > seq]
        found.sort(key=lambda e: e.seq)
        return [self._copy_event(e) for e in found[:limit]]

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""
        self._check()
        found = [e for e in self._state.events if e.at >= at]
        found.sort(key=lambda e: (e.at, e.origin, e.seq))
        return [self._copy_event(e) for e in found[:limit]]

    async def prune_events(self, before: int) -> int:
        """Drop events stamped before ``before``; sequence numbers are never reused."""
        self._check()
        kept = [e for e in self._state.events if e.at >= before]
        pruned = len(self._state.events) - len(kept)
        self._state.events = kept
        return pruned

    # ------------------------------------------------------------------ counters

    def _counter_pk(self, table: Table, key: Mapping[str, Any]) -> Key:
        check_columns(table, key)
        if "value" in key:
            raise ValueError(f"{table.name}: a counter key cannot hold the value column")
        missing = [c for c in table.primary_key if key.get(c) is None]
        if missing:
            raise ValueError(
                f"{table.name}: a counter key needs the primary key {table.primary_key}"
            )
        return tuple(normalise(table, c, key[c]) for c in table.primary_key)

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """Add ``amount`` to each named counter, creating missing rows at 0 first.

        Atomic by construction: the whole call runs in one reactor turn.
        """
        t = self._table(table)
        pks = [self._counter_pk(t, key) for key in keys]
        rows = self._state.rows[table]
        for pk in pks:
            entry = rows.get(pk)
            if entry is None:
                row: Row = {c: None for c in t.column_names}
                row.update(zip(t.primary_key, pk, strict=True))
                row["value"] = 0
                entry = rows[pk] = Entry(row)
            entry.row["value"] = int(entry.row["value"] or 0) + amount

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value, 0 when the row does not exist."""
        t = self._table(table)
        rows = self._state.rows[table]
        out: list[int] = []
        for key in keys:
            entry = rows.get(self._counter_pk(t, key))
            out.append(int(entry.row["value"] or 0) if entry is not None else 0)
        return out
