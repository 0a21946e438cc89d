# -*- test-case-name: tests.store.test_postgres_specific -*-
"""TTL rows the way Kong 0.9 kept them (SPEC §7.1): ``expire_at`` per (table, primary key).

Reads hide expired rows (:func:`~.queries.from_clause` joins ``ttls``); these
functions record a row's expiry, purge a table's expired rows before a write, and
delete every expired row (the store's periodic cleanup).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from kongtx.store.common import quote as _quote
from kongtx.store.interface import Row, Table
from kongtx.store.postgres.pool import Txn


async def set_ttl(t: Txn, table: Table, row: Row, ttl: int, now: datetime) -> None:
    """``row`` expires ``ttl`` seconds after ``now`` (an update restarts its clock)."""
    (pk,) = table.primary_key
    value = row[pk]
    await t.execute(
        "INSERT INTO ttls (primary_key_value, primary_uuid_value, table_name, primary_key_name, expire_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (primary_key_value, table_name)"
        " DO UPDATE SET expire_at = EXCLUDED.expire_at",
        [
            str(value),
            value if table.column(pk).type == "uuid" else None,
            table.name,
            pk,
            now + timedelta(seconds=ttl),
        ],
    )


async def purge_expired(t: Txn, table: Table, now: datetime) -> None:
    """Remove expired rows of ``table`` so they cannot collide with a new one."""
    (pk,) = table.primary_key
    await t.execute(
        f"DELETE FROM {_quote(table.name)} AS t USING ttls WHERE ttls.table_name = %s"
        f" AND ttls.primary_key_value = t.{_quote(pk)}::text AND ttls.expire_at <= %s",
        [table.name, now],
    )
    await t.execute("DELETE FROM ttls WHERE table_name = %s AND expire_at <= %s", [table.name, now])


async def forget(t: Txn, table: Table, row: Row) -> None:
    """Drop the ``ttls`` entry of a deleted row."""
    (pk,) = table.primary_key
    await t.execute(
        "DELETE FROM ttls WHERE table_name = %s AND primary_key_value = %s",
        [table.name, str(row[pk])],
    )


async def has_ttls(t: Txn) -> bool:
    """Whether the ``ttls`` table exists yet (migrations ran)."""
    rows = await t.execute("SELECT to_regclass('ttls') IS NOT NULL")
    return bool(rows[0][0])


async def delete_expired(t: Txn, ttl_tables: Sequence[Table], now: datetime) -> int:
    """Delete every expired row (and its ``ttls`` entry); how many rows went."""
    gone = 0
    for table in ttl_tables:
        (pk,) = table.primary_key
        await t.execute(
            f"DELETE FROM {_quote(table.name)} AS t USING ttls"
            f" WHERE ttls.table_name = %s AND ttls.primary_key_value = t.{_quote(pk)}::text"
            " AND ttls.expire_at <= %s",
            [table.name, now],
        )
        gone += t.rowcount
    await t.execute("DELETE FROM ttls WHERE expire_at <= %s", [now])
    return gone
