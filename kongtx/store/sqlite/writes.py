# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""sqlite row writes: one transaction each, the row and its change event together.

Each ``*_txn`` runs on the store's thread (:mod:`.thread`) and takes the connection
first: it deletes expired TTL rows, reads the row, checks unique and foreign keys,
writes, reads the stored row back and appends its ``cluster_events`` rows, all in one
``BEGIN IMMEDIATE`` transaction, so a change and its invalidation commit together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from kongtx.store.common import quote as _q
from kongtx.store.interface import ChangeType, ForeignKey, Row, Table, UniqueViolation
from kongtx.store.sqlite.events import Change, append_events
from kongtx.store.sqlite.sql import (
    EXPIRE_COLUMN,
    Codec,
    check_constraints,
    collect_cascade,
    find_row,
    integrity_error,
    pk_filter,
    purge,
    transaction,
)


def _logged(
    conn: sqlite3.Connection,
    codec: Codec,
    origin: str,
    pk: Mapping[str, Any],
    kind: ChangeType,
    old: Row | None,
    now: int,
) -> Row:
    """The row just written, read back, with its ``kind`` change event appended."""
    stored = find_row(conn, codec, pk, now)
    assert stored is not None
    append_events(conn, origin, [(codec.table.name, kind, old, stored)], now)
    return stored


def insert_txn(
    conn: sqlite3.Connection,
    codecs: Mapping[str, Codec],
    origin: str,
    table: Table,
    row: Row,
    expire_at: int | None,
    now: int,
) -> Row:
    codec = codecs[table.name]

    def body() -> Row:
        purge(conn, table, now)
        if find_row(conn, codec, pk_filter(table, row), now) is not None:
            pk = table.primary_key
            raise UniqueViolation(", ".join(pk), ", ".join(str(row[c]) for c in pk))
        check_constraints(conn, codecs, table, row, None, now)
        columns = list(table.column_names)
        values = [codec.encode(c, row[c]) for c in columns]
        if table.ttl:
            columns.append(EXPIRE_COLUMN)
            values.append(expire_at)
        try:
            conn.execute(
                f"INSERT INTO {_q(table.name)} ({', '.join(_q(c) for c in columns)})"
                f" VALUES ({', '.join('?' for _ in columns)})",
                values,
            )
        except sqlite3.IntegrityError as e:
            raise integrity_error(table, row, e) from e
        return _logged(conn, codec, origin, pk_filter(table, row), "create", None, now)

    return transaction(conn, body)


def update_txn(
    conn: sqlite3.Connection,
    codecs: Mapping[str, Codec],
    origin: str,
    table: Table,
    key: dict[str, Any],
    values: Row,
    expire_at: int | None,
    now: int,
) -> Row | None:
    codec = codecs[table.name]

    def body() -> Row | None:
        purge(conn, table, now)
        old = find_row(conn, codec, key, now)
        if old is None:
            return None
        new = {**old, **values}
        pk = pk_filter(table, old)
        if pk_filter(table, new) != pk:
            raise ValueError(f"{table.name}: the primary key of a row cannot change")
        check_constraints(conn, codecs, table, new, old, now)
        assignments = [f"{_q(c)} = ?" for c in values]
        params = [codec.encode(c, v) for c, v in values.items()]
        if expire_at is not None:
            assignments.append(f"{EXPIRE_COLUMN} = ?")
            params.append(expire_at)
        if assignments:
            where = " AND ".join(f"{_q(c)} = ?" for c in pk)
            try:
                conn.execute(
                    f"UPDATE {_q(table.name)} SET {', '.join(assignments)} WHERE {where}",
                    [*params, *pk.values()],
                )
            except sqlite3.IntegrityError as e:
                raise integrity_error(table, new, e) from e
        return _logged(conn, codec, origin, pk, "update", old, now)

    return transaction(conn, body)


def delete_txn(
    conn: sqlite3.Connection,
    codecs: Mapping[str, Codec],
    children: Mapping[str, Sequence[tuple[Table, ForeignKey]]],
    origin: str,
    table: Table,
    key: dict[str, Any],
    now: int,
) -> list[tuple[str, Row]]:
    def body() -> list[tuple[str, Row]]:
        purge(conn, table, now)
        row = find_row(conn, codecs[table.name], key, now)
        if row is None:
            return []
        doomed = collect_cascade(conn, codecs, children, table, row, now)
        # Deepest first, so the delete never leans on the schema's cascade being there.
        for dt, drow in reversed(doomed):
            pk = pk_filter(dt, drow)
            where = " AND ".join(f"{_q(c)} = ?" for c in pk)
            conn.execute(f"DELETE FROM {_q(dt.name)} WHERE {where}", list(pk.values()))
        gone: list[Change] = [(dt.name, "delete", drow, None) for dt, drow in doomed]
        append_events(conn, origin, gone, now)
        return [(dt.name, drow) for dt, drow in doomed]

    return transaction(conn, body)
