# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""SqliteStore: the IStore contract on sqlite (rows, transactions, TTLs, counters).

The statements are in :mod:`.sql`, the write transactions in :mod:`.writes`, the change
log in :mod:`.events`, migrations in :mod:`.migrations` and the thread in :mod:`.thread`;
this class checks each call and decides what runs on the thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.common import children_of, counter_keys
from kongtx.store.common import quote as _q
from kongtx.store.interface import ChangeEvent, IStore, Page, Row, Table
from kongtx.store.rules import (
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    decode_offset,
    encode_offset,
)
from kongtx.store.sqlite.events import (
    delete_events_before,
    read_events_after,
    read_events_since,
)
from kongtx.store.sqlite.migrations import drop_all, executed, run_migrations, table_names
from kongtx.store.sqlite.sql import (
    Codec,
    count_rows,
    find_row,
    purge,
    select_rows,
    transaction,
)
from kongtx.store.sqlite.thread import SqliteThread
from kongtx.store.sqlite.writes import delete_txn, insert_txn, update_txn

T = TypeVar("T")


class _Loop(Protocol):
    """What the store keeps of the sweep's looping call (started through the Clock)."""

    running: bool

    def stop(self) -> None: ...


@implementer(IStore)
class SqliteStore:
    """An :class:`IStore` on one sqlite file (or ``:memory:``), shared safely by processes.

    Args:
        path: the database file (created if missing).
        tables: every table (``kongtx.store.tables.TABLES``).
        origin: this node's name, stamped on every change event.
        clock: the node's Clock: "now" for TTLs and events, the sweep, timeouts.
        reactor: where results are delivered (``callFromThread``).
        timeout: seconds a write waits for another connection's lock.
        query_timeout: seconds any call but migrate/reset may take (default
            ``2 * timeout + 1``) before it fails with StoreUnavailable.
        sweep_interval: seconds between deletions of expired TTL rows.
    """

    name = "sqlite"
    log = logger()

    def __init__(
        self,
        path: str,
        tables: Mapping[str, Table],
        origin: str,
        clock: Clock,
        reactor: IReactorFromThreads,
        *,
        timeout: float = 5.0,
        query_timeout: float | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        check_tables(tables)
        self.path = path
        self.tables = dict(tables)
        self.origin = origin
        self.clock = clock
        self.reactor = reactor
        #: how long a write waits for another connection's lock (sqlite's busy_timeout).
        self.timeout = timeout
        #: how long any call but migrate/reset may take before StoreUnavailable.
        self.query_timeout = query_timeout if query_timeout is not None else 2 * timeout + 1
        self.sweep_interval = sweep_interval
        self._codecs = {name: Codec(t) for name, t in self.tables.items()}
        self._children = children_of(self.tables)
        self._thread = SqliteThread(
            path,
            f"kongtx-sqlite-{origin}",
            clock,
            reactor,
            timeout=self.timeout,
            query_timeout=self.query_timeout,
        )
        self._sweeper: _Loop | None = None

    async def _run(self, fn: Callable[..., T], *args: Any, timed: bool = True) -> T:
        """Run ``fn(connection, ...)`` on the store's thread (see :meth:`SqliteThread.run`)."""
        return await self._thread.run(fn, *args, timed=timed)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the thread, open the file (WAL, foreign keys) and the TTL sweep."""
        if self._thread.running:
            return
        self._thread.start()
        try:
            await self._run(lambda conn: None)
        except BaseException:
            await self.stop()
            raise
        self._sweeper = self.clock.looping_call(self.sweep_interval, self.sweep)
        self.log.info(
            "sqlite store open on {path} (origin {origin})", path=self.path, origin=self.origin
        )

    async def stop(self) -> None:
        """Stop the sweep, close the connection on its thread, stop the thread."""
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        await self._thread.stop()

    async def ping(self) -> None:
        """``SELECT 1`` on the store's thread."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def sweep(self) -> int:
        """Delete expired TTL rows now; returns how many (the periodic job calls this)."""
        now = self.clock.millis()
        ttl_tables = [t for t in self.tables.values() if t.ttl]

        def txn(conn: sqlite3.Connection) -> int:
            def body() -> int:
                present = table_names(conn)
                return sum(purge(conn, t, now) for t in ttl_tables if t.name in present)

            return transaction(conn, body)

        return await self._run(txn)

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Run pending migrations under ``BEGIN EXCLUSIVE`` (concurrent starters migrate once)."""
        entries = [(i, list(steps)) for i, steps in migrations.items()]

        def txn(conn: sqlite3.Connection) -> list[str]:
            return transaction(conn, lambda: run_migrations(conn, entries), "EXCLUSIVE")

        return await self._run(txn, timed=False)

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run, from ``schema_migrations``."""
        found: dict[str, list[str]] = await self._run(executed)
        return {k: v for k, v in found.items() if v}

    async def reset(self) -> None:
        """Drop every table in the file (``kong migrations reset``), children first."""

        def txn(conn: sqlite3.Connection) -> None:
            transaction(conn, lambda: drop_all(conn), "EXCLUSIVE")

        await self._run(txn, timed=False)

    def _table(self, name: str) -> tuple[Table, Codec]:
        return self.tables[name], self._codecs[name]

    # ------------------------------------------------------------------ rows

    async def insert(self, table: str, row: Row, ttl: int | None = None) -> Row:
        """Insert ``row``; unique and foreign keys are checked in the same transaction."""
        t, _ = self._table(table)
        check_columns(t, row)
        check_ttl(t, ttl)
        full = {c: row.get(c) for c in t.column_names}
        for c in t.primary_key:
            if full[c] is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        now = self.clock.millis()
        expire_at = now + int(ttl * 1000) if ttl is not None else None
        return await self._run(insert_txn, self._codecs, self.origin, t, full, expire_at, now)

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The live row named by its primary key or one unique column, or ``None``."""
        t, codec = self._table(table)
        check_key(t, key)
        now = self.clock.millis()
        return await self._run(find_row, codec, dict(key), now)

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every live row matching ``filters``, in listing order."""
        t, codec = self._table(table)
        check_columns(t, filters)
        now = self.clock.millis()
        return await self._run(select_rows, codec, dict(filters), now)

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Keyset paging: rows after the token's position, ``size + 1`` fetched to see a next page."""
        t, codec = self._table(table)
        check_columns(t, filters)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        position = decode_offset(t, offset) if offset is not None else None
        now = self.clock.millis()
        wanted = dict(filters)

        def read(conn: sqlite3.Connection) -> Page:
            def body() -> Page:
                rows = select_rows(conn, codec, wanted, now, position=position, limit=size + 1)
                total = count_rows(conn, codec, wanted, now)
                token = encode_offset(t, rows[size - 1]) if len(rows) > size else None
                return Page(rows=rows[:size], total=total, offset=token)

            # One read transaction: the page and its total come from the same snapshot.
            return transaction(conn, body, "DEFERRED")

        return await self._run(read)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """How many live rows match ``filters``."""
        t, codec = self._table(table)
        check_columns(t, filters)
        now = self.clock.millis()
        return await self._run(count_rows, codec, dict(filters), now)

    async def update(
        self, table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Set the given columns of the named row; ``ttl`` (if given) restarts its clock."""
        t, _ = self._table(table)
        check_key(t, key)
        check_columns(t, values)
        check_ttl(t, ttl)
        now = self.clock.millis()
        expire_at = now + int(ttl * 1000) if ttl is not None else None
        return await self._run(
            update_txn, self._codecs, self.origin, t, dict(key), dict(values), expire_at, now
        )

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the named row and its dependants; returns them all, the named row first."""
        t, _ = self._table(table)
        check_key(t, key)
        now = self.clock.millis()
        return await self._run(
            delete_txn, self._codecs, self._children, self.origin, t, dict(key), now
        )

    # ------------------------------------------------------------------ change log

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` after ``seq``, oldest first."""
        return await self._run(read_events_after, origin, seq, limit)

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""
        return await self._run(read_events_since, at, limit)

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; sequence numbers live on in cluster_event_seqs."""

        def prune(conn: sqlite3.Connection) -> int:
            return transaction(conn, lambda: delete_events_before(conn, before))

        return await self._run(prune)

    # ------------------------------------------------------------------ counters

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE SET value = value + ?`` for each key.

        One statement per key is atomic in sqlite (the write lock is held for the
        whole transaction), so nodes sharing the file never lose an increment.
        """
        t, codec = self._table(table)
        params = counter_keys(t, keys, codec.encode)
        pk = ", ".join(_q(c) for c in t.primary_key)
        sql = (
            f"INSERT INTO {_q(t.name)} ({pk}, {_q('value')})"
            f" VALUES ({', '.join('?' for _ in t.primary_key)}, ?)"
            f" ON CONFLICT ({pk}) DO UPDATE SET {_q('value')} ="
            f" COALESCE({_q('value')}, 0) + excluded.{_q('value')}"
        )

        def txn(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.executemany(sql, [[*p, amount] for p in params])

            transaction(conn, body)

        await self._run(txn)

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value (0 for a missing row), read in one snapshot."""
        t, codec = self._table(table)
        params = counter_keys(t, keys, codec.encode)
        where = " AND ".join(f"{_q(c)} = ?" for c in t.primary_key)
        sql = f"SELECT {_q('value')} FROM {_q(t.name)} WHERE {where}"

        def read(conn: sqlite3.Connection) -> list[int]:
            out: list[int] = []
            for p in params:
                found = conn.execute(sql, p).fetchone()
                out.append(int(found[0] or 0) if found is not None else 0)
            return out

        return await self._run(read)
