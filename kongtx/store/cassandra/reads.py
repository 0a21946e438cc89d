# -*- test-case-name: tests.store.test_contract,tests.store.test_cassandra_specific -*-
"""Live rows read through the driver: TTLs hidden, the read-before-write checks, cascades.

Cassandra has no constraints, so every write of :mod:`.store` first reads through
:class:`RowReads`: uniqueness and foreign keys are checked on the secondary indexes and a
deletion collects its dependants row by row (the package docstring says why, and what
race remains).  Rows whose hidden expiry has passed on the injected clock are never
returned, and filters CQL cannot express (``NULL``, tags) are applied here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kongtx.clock import Clock
from kongtx.store.cassandra.cql import alive, load, matches, qualified, select_list, where
from kongtx.store.cassandra.session import CassandraSession
from kongtx.store.common import cascade_rows
from kongtx.store.interface import ForeignKey, ForeignKeyViolation, Row, Table, UniqueViolation
from kongtx.store.rules import check_key, sort_key


class RowReads:
    """The store's reads of live rows and the checks and cascades built on them."""

    def __init__(
        self,
        driver: CassandraSession,
        tables: Mapping[str, Table],
        children: Mapping[str, Sequence[tuple[Table, ForeignKey]]],
        clock: Clock,
    ) -> None:
        self._driver = driver
        self.tables = tables
        self._children = children
        self.clock = clock

    def _ks(self, table: str) -> str:
        return qualified(self._driver.keyspace, table)

    async def select_live(
        self, table: Table, filters: Mapping[str, Any]
    ) -> list[tuple[Row, int | None]]:
        """Live rows matching ``filters``, each with its expiry (ms) or None."""
        cond, params, local, empty = where(table, filters)
        if empty:
            return []
        rows = await self._driver.rows(
            f"SELECT {select_list(table)} FROM {self._ks(table.name)}{cond}", params
        )
        out: list[tuple[Row, int | None]] = []
        n = len(table.columns)
        now = self.clock.millis()
        for values in rows:
            if not alive(table, values, now):
                continue
            row = load(table, values)
            if matches(row, local):
                out.append((row, values[n] if table.ttl else None))
        return out

    async def select_rows(self, table: Table, filters: Mapping[str, Any]) -> list[Row]:
        return [row for row, _ in await self.select_live(table, filters)]

    async def find_live(
        self, table: Table, key: Mapping[str, Any]
    ) -> tuple[Row, int | None] | None:
        check_key(table, key)
        if all(key.get(c) is not None for c in table.primary_key):
            lookup = {c: key[c] for c in table.primary_key}
        else:
            col = next(c for c in table.unique if key.get(c) is not None)
            lookup = {col: key[col]}
        for row, expire_at in await self.select_live(table, lookup):
            if all(row.get(c) == v for c, v in key.items()):
                return row, expire_at
        return None

    async def find(self, table: Table, key: Mapping[str, Any]) -> Row | None:
        found = await self.find_live(table, key)
        return found[0] if found else None

    async def check_constraints(self, table: Table, row: Row, own: tuple[Any, ...] | None) -> None:
        """Read-before-write uniqueness then foreign keys (race-prone; see the package doc)."""
        for col in table.unique:
            value = row.get(col)
            if value is None:
                continue
            for other in await self.select_rows(table, {col: value}):
                if tuple(other[c] for c in table.primary_key) != own:
                    raise UniqueViolation(col, value)
        for fk in table.foreign_keys:
            value = row.get(fk.column)
            if value is None:
                continue
            target = self.tables[fk.table]
            if not await self.select_rows(target, {fk.target: value}):
                raise ForeignKeyViolation(fk.column, value)

    async def collect(self, table: Table, row: Row) -> list[tuple[Table, Row]]:
        """The row and every live row a deletion of it takes (:func:`~.common.cascade_rows`)."""

        async def dependants(child: Table, column: str, value: Any) -> list[Row]:
            rows = await self.select_rows(child, {column: value})
            rows.sort(key=lambda r: sort_key(child, r))
            return rows

        return await cascade_rows(self._children, table, row, dependants)
