# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""sqlite statements: value encoding, WHERE clauses, keyset paging, row reads, constraint errors.

Plain functions of a connection, run on the store's thread (:mod:`.thread`); they
never touch the reactor.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kongtx.store.common import cascade_rows, run_to_end
from kongtx.store.common import quote as _q
from kongtx.store.interface import (
    ForeignKey,
    ForeignKeyViolation,
    Row,
    StoreError,
    Table,
    UniqueViolation,
)
from kongtx.store.rules import TagFilter, canonical_json, order_columns

T = TypeVar("T")

#: The private TTL column of TTL tables (epoch ms; NULL = never expires).
EXPIRE_COLUMN = "kong_expire_at"

_UNIQUE_ERROR = re.compile(r"UNIQUE constraint failed: (?P<cols>.+)$")


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (``;`` inside strings and triggers is safe).

    Why not ``executescript``: it commits any open transaction first, and
    migrations must run inside the ``BEGIN EXCLUSIVE`` that makes them run once.
    """
    statements: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if _has_sql(buffer):
                statements.append(buffer.strip())
            buffer = ""
    if _has_sql(buffer[:-1]):
        raise ValueError(f"incomplete SQL statement at the end of the script: {buffer[:-1]!r}")
    return statements


def _has_sql(text: str) -> bool:
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return bool("".join(lines).strip().strip(";").strip())


def transaction(conn: sqlite3.Connection, body: Callable[[], T], mode: str = "IMMEDIATE") -> T:
    """Run ``body`` in one transaction: committed if it returns, rolled back if it raises."""
    conn.execute(f"BEGIN {mode}")
    try:
        result = body()
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class Codec:
    """Python values <-> sqlite values, column by column, for one table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.names = table.column_names
        self.kinds = {c.name: c.type for c in table.columns}
        self.select_list = ", ".join(_q(c) for c in self.names)

    def encode(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        kind = self.kinds[column]
        if kind == "json":
            return canonical_json(value)
        if kind == "boolean":
            return 1 if value else 0
        return value

    def decode(self, values: Sequence[Any]) -> Row:
        row: Row = {}
        for name, value in zip(self.names, values, strict=True):
            kind = self.kinds[name]
            if value is not None and kind == "json":
                value = json.loads(value)
            elif value is not None and kind == "boolean":
                value = bool(value)
            row[name] = value
        return row


def pk_filter(table: Table, row: Row) -> dict[str, Any]:
    """The primary key columns of ``row``."""
    return {c: row[c] for c in table.primary_key}


def purge(conn: sqlite3.Connection, table: Table, now: int) -> int:
    """Delete ``table``'s expired rows, so that they never block a unique key."""
    if not table.ttl:
        return 0
    cur = conn.execute(
        f"DELETE FROM {_q(table.name)} WHERE {EXPIRE_COLUMN} IS NOT NULL AND {EXPIRE_COLUMN} <= ?",
        (now,),
    )
    return max(cur.rowcount, 0)


def where(codec: Codec, filters: Mapping[str, Any], now: int) -> tuple[list[str], list[Any]]:
    """The clauses and parameters keeping the live rows that match ``filters``."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in filters.items():
        if isinstance(value, TagFilter):
            clauses.append(tag_clause(column, value))
            params.extend(value.tags)
        elif value is None:
            clauses.append(f"{_q(column)} IS NULL")
        else:
            clauses.append(f"{_q(column)} = ?")
            params.append(codec.encode(column, value))
    if codec.table.ttl:
        clauses.append(f"({EXPIRE_COLUMN} IS NULL OR {EXPIRE_COLUMN} > ?)")
        params.append(now)
    return clauses, params


def tag_clause(column: str, wanted: TagFilter) -> str:
    """SQL for a tag filter: one ``json_each`` membership test per tag, ANDed or ORed.

    Done inside the query (not after it) so that ``LIMIT``, keyset paging and
    ``COUNT`` see exactly the rows the filter keeps.
    """
    test = f"EXISTS (SELECT 1 FROM json_each({_q(column)}) WHERE json_each.value = ?)"
    joiner = " AND " if wanted.mode == "all" else " OR "
    return "(" + joiner.join(test for _ in wanted.tags) + ")"


def after(columns: Sequence[str], position: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL for "sorts after ``position``" under ``ORDER BY columns`` (NULLs first)."""
    column, value = columns[0], position[0]
    greater = f"{_q(column)} IS NOT NULL" if value is None else f"{_q(column)} > ?"
    equal = f"{_q(column)} IS NULL" if value is None else f"{_q(column)} = ?"
    mine = [] if value is None else [value]
    if len(columns) == 1:
        return greater, mine
    rest, rest_params = after(columns[1:], position[1:])
    return f"({greater} OR ({equal} AND {rest}))", [*mine, *mine, *rest_params]


def select_rows(
    conn: sqlite3.Connection,
    codec: Codec,
    filters: Mapping[str, Any],
    now: int,
    *,
    position: Sequence[Any] | None = None,
    limit: int | None = None,
) -> list[Row]:
    """The live rows matching ``filters`` in listing order, after ``position`` if given."""
    table = codec.table
    clauses, params = where(codec, filters, now)
    order = order_columns(table)
    if position is not None:
        clause, extra = after(order, position)
        clauses.append(clause)
        params.extend(extra)
    sql = f"SELECT {codec.select_list} FROM {_q(table.name)}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY " + ", ".join(_q(c) for c in order)
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [codec.decode(r) for r in conn.execute(sql, params)]


def count_rows(conn: sqlite3.Connection, codec: Codec, filters: Mapping[str, Any], now: int) -> int:
    """How many live rows match ``filters``."""
    clauses, params = where(codec, filters, now)
    sql = f"SELECT COUNT(*) FROM {_q(codec.table.name)}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    (n,) = conn.execute(sql, params).fetchone()
    return int(n)


def find_row(
    conn: sqlite3.Connection, codec: Codec, key: Mapping[str, Any], now: int
) -> Row | None:
    """The first live row matching ``key``, or ``None``."""
    rows = select_rows(conn, codec, key, now, limit=1)
    return rows[0] if rows else None


def integrity_error(table: Table, row: Row, error: sqlite3.IntegrityError) -> StoreError:
    """Name the field of a constraint the pre-checks did not see (another process raced us)."""
    message = str(error)
    match = _UNIQUE_ERROR.search(message)
    if match is not None:
        columns = [c.strip().split(".", 1)[-1] for c in match["cols"].split(",")]
        field = ", ".join(columns)
        return UniqueViolation(field, ", ".join(str(row.get(c)) for c in columns))
    if "FOREIGN KEY" in message:
        for fk in table.foreign_keys:
            if row.get(fk.column) is not None:
                return ForeignKeyViolation(fk.column, row[fk.column])
    return StoreError(f"[sqlite error] {message}")


def check_constraints(
    conn: sqlite3.Connection,
    codecs: Mapping[str, Codec],
    table: Table,
    row: Row,
    own: Row | None,
    now: int,
) -> None:
    """UniqueViolation / ForeignKeyViolation, unique first (as Postgres reports them).

    ``own`` is the stored row on update (its own values collide with nothing).
    """
    codec = codecs[table.name]
    own_pk = pk_filter(table, own) if own is not None else None
    for column in table.unique:
        value = row[column]
        if value is None or (own is not None and own[column] == value):
            continue
        holder = find_row(conn, codec, {column: value}, now)
        if holder is not None and pk_filter(table, holder) != own_pk:
            raise UniqueViolation(column, value)
    for fk in table.foreign_keys:
        value = row[fk.column]
        if value is None or (own is not None and own[fk.column] == value):
            continue
        if count_rows(conn, codecs[fk.table], {fk.target: value}, now) == 0:
            raise ForeignKeyViolation(fk.column, value)


def collect_cascade(
    conn: sqlite3.Connection,
    codecs: Mapping[str, Codec],
    children: Mapping[str, Sequence[tuple[Table, ForeignKey]]],
    table: Table,
    row: Row,
    now: int,
) -> list[tuple[Table, Row]]:
    """The row and every live row a deletion of it takes (:func:`~.common.cascade_rows`),
    read here, on the sqlite thread, inside the caller's transaction."""

    async def dependants(child: Table, column: str, value: Any) -> list[Row]:
        return select_rows(conn, codecs[child.name], {column: value}, now)

    return run_to_end(cascade_rows(children, table, row, dependants))
