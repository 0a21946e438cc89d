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
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    ForeignKeyViolation,
    IStore,
    Page,
    Row,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.tables import (
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

Key = tuple[Any, ...]


@dataclass
class _Entry:
    row: Row
    #: epoch seconds after which the row is gone, or None.
    expire_at: float | None = None


@dataclass
class _State:
    """Everything a database would hold; shared by the peers of one store."""

    rows: dict[str, dict[Key, _Entry]]
    #: (table, unique column) -> value -> primary key of the row holding it.
    unique: dict[tuple[str, str], dict[Any, Key]]
    events: list[ChangeEvent] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)
    migrations: dict[str, list[str]] = field(default_factory=dict)


def _normalise(table: Table, name: str, value: Any) -> Any:
    """Store a value the way a real backend would give it back."""
    if value is None:
        return None
    kind = table.column(name).type
    if kind == "json":
        # A real backend stores text: tuples come back as lists, keys as strings.
        return json.loads(json.dumps(value))
    if kind == "boolean":
        return bool(value)
    return value


def _copy_row(row: Row | None) -> Row | None:
    return None if row is None else copy.deepcopy(row)


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
        _state: _State | None = None,
    ) -> None:
        check_tables(tables)
        self.tables = dict(tables)
        self.origin = origin
        self.clock = clock
        #: set to False to make every call fail with StoreUnavailable (outage tests).
        self.available = True
        self._state = _state if _state is not None else self._empty_state()

    def _empty_state(self) -> _State:
        return _State(
            rows={name: {} for name in self.tables},
            unique={(t.name, c): {} for t in self.tables.values() for c in t.unique},
        )

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
                self._forget(table, k)

    def _forget(self, table: Table, pk: Key) -> Row:
        entry = self._state.rows[table.name].pop(pk)
        for col in table.unique:
            value = entry.row[col]
            if value is not None:
                self._state.unique[(table.name, col)].pop(value, None)
        return entry.row

    def _pk(self, table: Table, row: Mapping[str, Any]) -> Key:
        return tuple(row[c] for c in table.primary_key)

    def _find(self, table: Table, key: Mapping[str, Any]) -> Row | None:
        check_key(table, key)
        self._expire()
        rows = self._state.rows[table.name]
        if all(key.get(c) is not None for c in table.primary_key):
            entry = rows.get(tuple(_normalise(table, c, key[c]) for c in table.primary_key))
            candidate = entry.row if entry is not None else None
        else:
            col = next(c for c in table.unique if key.get(c) is not None)
            pk = self._state.unique[(table.name, col)].get(_normalise(table, col, key[col]))
            candidate = rows[pk].row if pk is not None else None
        if candidate is None or not self._matches(table, candidate, key):
            return None
        return candidate

    @staticmethod
    def _matches(table: Table, row: Row, filters: Mapping[str, Any]) -> bool:
        return all(
            v.matches(row[c]) if isinstance(v, TagFilter) else row[c] == _normalise(table, c, v)
            for c, v in filters.items()
        )

    def _filtered(self, table: Table, filters: Mapping[str, Any]) -> list[Row]:
        check_columns(table, filters)
        self._expire()
        rows = [e.row for e in self._state.rows[table.name].values()]
        matched = [r for r in rows if self._matches(table, r, filters)]
        matched.sort(key=lambda r: sort_key(table, r))
        return matched

    def _check_constraints(self, table: Table, row: Row, own: Key | None) -> None:
        """Raise UniqueViolation / ForeignKeyViolation as the real backends do (unique first)."""
        for col in table.unique:
            value = row[col]
            if value is None:
                continue
            holder = self._state.unique[(table.name, col)].get(value)
            if holder is not None and holder != own:
                raise UniqueViolation(col, value)
        for fk in table.foreign_keys:
            value = row[fk.column]
            if value is None:
                continue
            target = self.tables[fk.table]
            if not self._target_rows(target, fk.target, value):
                raise ForeignKeyViolation(fk.column, value)

    def _target_rows(self, target: Table, column: str, value: Any) -> list[_Entry]:
        rows = self._state.rows[target.name]
        if target.primary_key == (column,):
            entry = rows.get((value,))
            return [entry] if entry is not None else []
        return [e for e in rows.values() if e.row[column] == value]

    def _put(self, table: Table, row: Row, expire_at: float | None) -> None:
        pk = self._pk(table, row)
        old = self._state.rows[table.name].get(pk)
        if old is not None:
            for col in table.unique:
                if old.row[col] is not None:
                    self._state.unique[(table.name, col)].pop(old.row[col], None)
        self._state.rows[table.name][pk] = _Entry(row, expire_at)
        for col in table.unique:
            if row[col] is not None:
                self._state.unique[(table.name, col)][row[col]] = pk

    def _event(self, collection: str, kind: ChangeType, old: Row | None, new: Row | None) -> None:
        seq = self._state.seqs.get(self.origin, 0) + 1
        self._state.seqs[self.origin] = seq
        self._state.events.append(
            ChangeEvent(
                origin=self.origin,
                seq=seq,
                at=self.clock.millis(),
                collection=collection,
                type=kind,
                old=_copy_row(old),
                new=_copy_row(new),
            )
        )

    @staticmethod
    def _copy_event(event: ChangeEvent) -> ChangeEvent:
        return replace(event, old=_copy_row(event.old), new=_copy_row(event.new))

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
        fresh = self._empty_state()
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
        full = {c: _normalise(t, c, row.get(c)) for c in t.column_names}
        for c in t.primary_key:
            if full[c] is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        self._expire()
        pk = self._pk(t, full)
        if pk in self._state.rows[table]:
            col = ", ".join(t.primary_key)
            raise UniqueViolation(col, ", ".join(str(v) for v in pk))
        self._check_constraints(t, full, None)
        expire_at = self.clock.seconds() + ttl if ttl is not None else None
        self._put(t, full, expire_at)
        self._event(table, "create", None, full)
        return copy.deepcopy(full)

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row named by its primary key or one unique column, or ``None``."""
        t = self._table(table)
        return _copy_row(self._find(t, key))

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
        new.update({c: _normalise(t, c, v) for c, v in values.items()})
        pk = self._pk(t, old)
        if self._pk(t, new) != pk:
            raise ValueError(f"{table}: the primary key of a row cannot change")
        self._check_constraints(t, new, pk)
        entry = self._state.rows[table][pk]
        expire_at = self.clock.seconds() + ttl if ttl is not None else entry.expire_at
        self._put(t, new, expire_at)
        self._event(table, "update", old, new)
        return copy.deepcopy(new)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the named row and every row that references it, the named row first."""
        t = self._table(table)
        row = self._find(t, key)
        if row is None:
            return []
        doomed: list[tuple[Table, Row]] = []
        seen: set[tuple[str, Key]] = set()
        self._collect(t, row, doomed, seen)
        for dt, drow in doomed:
            self._forget(dt, self._pk(dt, drow))
            self._event(dt.name, "delete", drow, None)
        return [(dt.name, copy.deepcopy(drow)) for dt, drow in doomed]

    def _collect(
        self, table: Table, row: Row, out: list[tuple[Table, Row]], seen: set[tuple[str, Key]]
    ) -> None:
        """Depth-first: the row, then (per referencing table, in listing order) its dependants."""
        mark = (table.name, self._pk(table, row))
        if mark in seen:
            return
        seen.add(mark)
        out.append((table, row))
        for child in self.tables.values():
            for fk in child.foreign_keys:
                if fk.table != table.name or row[fk.target] is None:
                    continue
                for dependant in self._filtered(child, {fk.column: row[fk.target]}):
                    self._collect(child, dependant, out, seen)

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
        return tuple(_normalise(table, c, key[c]) for c in table.primary_key)

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
                entry = rows[pk] = _Entry(row)
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
