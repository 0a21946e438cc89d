# -*- test-case-name: tests.store.test_contract,tests.store.test_memory_specific -*-
"""What a :class:`~kongtx.store.memory.MemoryStore` holds: rows, unique indexes, the change log.

:class:`MemoryData` is everything a database would hold, shared by the peers of one
store (:meth:`~kongtx.store.memory.MemoryStore.peer`).  Its methods keep the unique
indexes in step with the rows and raise the constraint errors in the order the real
backends do; the store above it validates calls, reads and pages, cascades and counts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    ForeignKeyViolation,
    Row,
    Table,
    UniqueViolation,
)

Key = tuple[Any, ...]


@dataclass
class Entry:
    row: Row
    #: epoch seconds after which the row is gone, or None.
    expire_at: float | None = None


@dataclass
class MemoryData:
    """Everything a database would hold; shared by the peers of one store."""

    rows: dict[str, dict[Key, Entry]]
    #: (table, unique column) -> value -> primary key of the row holding it.
    unique: dict[tuple[str, str], dict[Any, Key]]
    events: list[ChangeEvent] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)
    migrations: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def empty(cls, tables: Mapping[str, Table]) -> MemoryData:
        """No rows, an empty index per unique column, no events or migrations."""
        return cls(
            rows={name: {} for name in tables},
            unique={(t.name, c): {} for t in tables.values() for c in t.unique},
        )

    def forget(self, table: Table, pk: Key) -> Row:
        entry = self.rows[table.name].pop(pk)
        for col in table.unique:
            value = entry.row[col]
            if value is not None:
                self.unique[(table.name, col)].pop(value, None)
        return entry.row

    def check_constraints(
        self, tables: Mapping[str, Table], table: Table, row: Row, own: Key | None
    ) -> None:
        """Raise UniqueViolation / ForeignKeyViolation as the real backends do (unique first)."""
        for col in table.unique:
            value = row[col]
            if value is None:
                continue
            holder = self.unique[(table.name, col)].get(value)
            if holder is not None and holder != own:
                raise UniqueViolation(col, value)
        for fk in table.foreign_keys:
            value = row[fk.column]
            if value is None:
                continue
            target = tables[fk.table]
            if not self.target_rows(target, fk.target, value):
                raise ForeignKeyViolation(fk.column, value)

    def target_rows(self, target: Table, column: str, value: Any) -> list[Entry]:
        rows = self.rows[target.name]
        if target.primary_key == (column,):
            entry = rows.get((value,))
            return [entry] if entry is not None else []
        return [e for e in rows.values() if e.row[column] == value]

    def put(self, table: Table, row: Row, expire_at: float | None) -> None:
        pk = primary_key(table, row)
        old = self.rows[table.name].get(pk)
        if old is not None:
            for col in table.unique:
                if old.row[col] is not None:
                    self.unique[(table.name, col)].pop(old.row[col], None)
        self.rows[table.name][pk] = Entry(row, expire_at)
        for col in table.unique:
            if row[col] is not None:
                self.unique[(table.name, col)][row[col]] = pk

    def record(
        self,
        origin: str,
        at: int,
        collection: str,
        kind: ChangeType,
        old: Row | None,
        new: Row | None,
    ) -> None:
        """Append ``origin``'s next change event (its sequence numbers are never reused)."""
        seq = self.seqs.get(origin, 0) + 1
        self.seqs[origin] = seq
        self.events.append(
            ChangeEvent(
                origin=origin,
                seq=seq,
                at=at,
                collection=collection,
                type=kind,
                old=copy_row(old),
                new=copy_row(new),
            )
        )


def primary_key(table: Table, row: Mapping[str, Any]) -> Key:
    return tuple(row[c] for c in table.primary_key)


def normalise(table: Table, name: str, value: Any) -> Any:
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


def copy_row(row: Row | None) -> Row | None:
    return None if row is None else copy.deepcopy(row)
