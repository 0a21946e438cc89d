# -*- test-case-name: tests.store.test_contract,tests.store.test_cassandra_specific -*-
"""Counter rows on Cassandra: a compare-and-set loop (lightweight transactions) per key.

Why not Cassandra ``counter`` columns (Kong's choice): a counter table accepts no
INSERT, so its rows could not go through the store's ordinary row methods.  A node's
own increments of one key are queued so that only nodes, not requests, contend in
Paxos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import DeferredLock

from kongtx.store.cassandra.cql import qualified
from kongtx.store.cassandra.session import CassandraSession
from kongtx.store.common import quote as _q
from kongtx.store.interface import StoreUnavailable, Table

_UNKNOWN = object()


class CounterRows:
    """Increments and reads of the int ``value`` of counter rows, named by primary key."""

    def __init__(self, driver: CassandraSession) -> None:
        self._driver = driver
        self._counter_locks: dict[tuple[str, str], DeferredLock] = {}

    def _ks(self, table: str) -> str:
        return qualified(self._driver.keyspace, table)

    async def _increment_one(self, table: Table, pk: list[Any], amount: int) -> None:
        """Compare-and-set on the int ``value`` (lightweight transactions) until it applies."""
        cols = ", ".join(_q(c) for c in table.primary_key)
        cond = " AND ".join(f"{_q(c)} = %s" for c in table.primary_key)
        current: Any = _UNKNOWN
        for _attempt in range(1000):
            if current is _UNKNOWN:
                rows = await self._driver.rows(
                    f"INSERT INTO {self._ks(table.name)} ({cols}, value)"
                    f" VALUES ({', '.join(['%s'] * len(pk))}, %s) IF NOT EXISTS",
                    [*pk, amount],
                )
            else:
                rows = await self._driver.rows(
                    f"UPDATE {self._ks(table.name)} SET value = %s WHERE {cond} IF value = %s",
                    [(current or 0) + amount, *pk, current],
                )
            if rows[0][0]:
                return
            current = getattr(rows[0], "value", None)
        raise StoreUnavailable(f"{table.name}: counter still contended after 1000 attempts")

    async def increment(self, tb: Table, params: Sequence[list[Any]], amount: int) -> None:
        """Add ``amount`` to the counter of each primary key, one key at a time."""
        for pk in params:
            mark = (tb.name, repr(pk))
            lock = self._counter_locks.setdefault(mark, DeferredLock())
            try:
                async with lock:
                    await self._increment_one(tb, pk, amount)
            finally:
                if not lock.locked and not lock.waiting:
                    self._counter_locks.pop(mark, None)

    async def read(self, tb: Table, params: Sequence[list[Any]]) -> list[int]:
        """Each counter's value, 0 for a missing row."""
        cond = " AND ".join(f"{_q(c)} = %s" for c in tb.primary_key)
        out: list[int] = []
        for pk in params:
            rows = await self._driver.rows(
                f"SELECT value FROM {self._ks(tb.name)} WHERE {cond}", pk
            )
            out.append(int(rows[0][0] or 0) if rows else 0)
        return out
