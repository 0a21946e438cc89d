# -*- test-case-name: tests.store.test_contract,tests.store.test_postgres_specific -*-
"""Counter rows in PostgreSQL: an upsert per key, and reads in one snapshot.

Functions of a :class:`~.pool.Txn`, as :mod:`.events`; the store runs each call
in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kongtx.store.common import counter_keys
from kongtx.store.common import quote as _quote
from kongtx.store.interface import Table
from kongtx.store.postgres.pool import Txn
from kongtx.store.postgres.queries import param


def key_params(table: Table, keys: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Each key's primary-key values, as statement parameters."""
    return counter_keys(table, keys, lambda c, v: param(table, c, v))


async def increment(t: Txn, table: Table, params: list[list[Any]], amount: int) -> None:
    """``INSERT ... ON CONFLICT DO UPDATE SET value = value + n`` per key.

    Keys are taken in a fixed order so that two nodes incrementing the same set of
    counters lock their rows in the same order and cannot deadlock.
    """
    pk = ", ".join(_quote(c) for c in table.primary_key)
    sql = (
        f"INSERT INTO {_quote(table.name)} AS t ({pk}, value)"
        f" VALUES ({', '.join(['%s'] * len(table.primary_key))}, %s)"
        f" ON CONFLICT ({pk}) DO UPDATE SET value = coalesce(t.value, 0) + EXCLUDED.value"
    )
    for p in sorted(params, key=repr):
        await t.execute(sql, [*p, amount])


async def read(t: Txn, table: Table, params: list[list[Any]]) -> list[int]:
    """Each counter's value, 0 for a missing row, under REPEATABLE READ."""
    cond = " AND ".join(f"{_quote(c)} = %s" for c in table.primary_key)
    sql = f"SELECT value FROM {_quote(table.name)} WHERE {cond}"
    await t.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    out: list[int] = []
    for p in params:
        found = await t.execute(sql, p)
        out.append(int(found[0][0] or 0) if found else 0)
    return out
