# -*- test-case-name: tests.store.test_contract,tests.store.test_postgres_specific -*-
"""PostgresStore: the IStore contract on PostgreSQL, one transaction per call.

The pool and its timeouts are in :mod:`.pool`, the statements in :mod:`.queries`,
TTLs in :mod:`.ttls`, the change log in :mod:`.events` and migrations in
:mod:`.migrations`; this class decides what runs together in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.common import cascade_rows, children_of
from kongtx.store.common import quote as _quote
from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    IStore,
    Page,
    Row,
    StoreUnavailable,
    Table,
)
from kongtx.store.postgres import counters, events, ttls
from kongtx.store.postgres.migrations import drop_all, executed, run_migrations
from kongtx.store.postgres.pool import PgPool, Txn, ssl_settings
from kongtx.store.postgres.queries import (
    after,
    load,
    order_by,
    param,
    query,
    select_list,
    timestamp,
    where_pk,
)
from kongtx.store.rules import (
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    decode_offset,
    encode_offset,
)
from kongtx.store.tables import TABLES

T = TypeVar("T")


@implementer(IStore)
class PostgresStore:
    """An :class:`IStore` on PostgreSQL (9.5+; tested on Debian's 15).

    ``ssl``/``ssl_verify``/``ssl_ca``: TLS, verified against the CA file ``ssl_ca``
    (see :func:`.pool.ssl_settings`).
    """

    name = "postgres"
    log = logger()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str = "kong",
        password: str | None = None,
        database: str = "kong",
        ssl: bool = False,
        ssl_verify: bool = False,
        ssl_ca: str | None = None,
        tables: Mapping[str, Table] = TABLES,
        origin: str,
        clock: Clock,
        reactor: Any,
        timeout: float = 5.0,
        pool_size: int = 10,
        ttl_cleanup_interval: float = 60.0,
        migration_timeout: float = 120.0,
    ) -> None:
        check_tables(tables)
        self.tables = dict(tables)
        self.origin = origin
        self.clock = clock
        dsn: dict[str, Any] = {
            "host": host,
            "port": int(port),
            "user": user,
            "dbname": database,
            "application_name": f"kongtx {origin}"[:63],
            **ssl_settings(ssl, ssl_verify, ssl_ca),
        }
        if password:
            dsn["password"] = password
        self._pool = PgPool(
            dsn, clock=clock, reactor=reactor, timeout=float(timeout), size=pool_size
        )
        self.migration_timeout = max(float(migration_timeout), self.timeout)
        self._cleanup_interval = ttl_cleanup_interval
        self._cleanup: Any = None
        #: referenced table -> [(referencing table, fk)] for cascades.
        self._children = children_of(self.tables)

    @property
    def timeout(self) -> float:
        """Seconds any statement (and a connect) may take before StoreUnavailable."""
        return self._pool.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._pool.timeout = value

    def _run(self, body: Callable[[Txn], Awaitable[T]], limit: float | None = None) -> Awaitable[T]:
        """Run ``body`` in one transaction on a pooled connection (see :meth:`PgPool.run`)."""
        return self._pool.run(body, limit)

    def _table(self, name: str) -> Table:
        return self.tables[name]

    def _now(self) -> datetime:
        return timestamp(self.clock.seconds())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open one connection (fails with StoreUnavailable) and start the TTL cleanup job."""
        self._pool.stopped = False
        await self.ping()
        if self._cleanup is None and any(t.ttl for t in self.tables.values()):
            self._cleanup = self.clock.looping_call(self._cleanup_interval, self._cleanup_ttls)

    async def stop(self) -> None:
        """Stop the cleanup job and close every connection."""
        if self._cleanup is not None:
            if self._cleanup.running:
                self._cleanup.stop()
            self._cleanup = None
        self._pool.close()

    async def ping(self) -> None:
        """``SELECT 1``; raises StoreUnavailable when the server is gone."""

        async def txn(t: Txn) -> None:
            await t.execute("SELECT 1")

        await self._run(txn)

    async def _cleanup_ttls(self) -> int:
        """Delete expired rows (and their ``ttls`` entries); returns how many rows went."""
        ttl_tables = [t for t in self.tables.values() if t.ttl]

        async def txn(t: Txn) -> int:
            return await ttls.delete_expired(t, ttl_tables, self._now())

        try:
            exists = await self._run(ttls.has_ttls)
            if not exists:
                return 0
            return await self._run(txn)
        except StoreUnavailable as e:
            self.log.info("TTL cleanup skipped: {error}", error=str(e))
            return 0

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Run pending migrations in one transaction under a PostgreSQL advisory lock.

        Two nodes starting together: the second waits on the lock, then finds every
        migration recorded and returns ``[]``.  DDL is transactional in PostgreSQL, so a
        failing migration leaves the schema as it was before this call.
        """
        return await self._run(lambda t: run_migrations(t, migrations), self.migration_timeout)

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run (``{}`` on an empty database)."""
        return await self._run(executed)

    async def reset(self) -> None:
        """Drop every table and function the migrations create, under the migration lock."""
        await self._run(lambda t: drop_all(t, self.tables), self.migration_timeout)

    # ------------------------------------------------------------------ rows

    async def _event(
        self, t: Txn, collection: str, kind: ChangeType, old: Row | None, new: Row | None
    ) -> None:
        await events.log_event(t, self.origin, self.clock.millis(), collection, kind, old, new)

    async def insert(self, table: str, row: Row, ttl: int | None = None) -> Row:
        """INSERT ... RETURNING, its ``create`` event and its TTL, in one transaction."""
        tb = self._table(table)
        check_columns(tb, row)
        check_ttl(tb, ttl)
        for c in tb.primary_key:
            if row.get(c) is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        cols = tb.column_names
        params = [param(tb, c, row.get(c)) for c in cols]

        async def txn(t: Txn) -> Row:
            if tb.ttl:
                await ttls.purge_expired(t, tb, self._now())
            rows = await t.execute(
                f"INSERT INTO {_quote(table)} AS t ({', '.join(_quote(c) for c in cols)})"
                f" VALUES ({', '.join(['%s'] * len(cols))}) RETURNING {select_list(tb)}",
                params,
            )
            new = load(tb, rows[0])
            if ttl is not None:
                await ttls.set_ttl(t, tb, new, ttl, self._now())
            await self._event(t, table, "create", None, new)
            return new

        return await self._run(txn)

    async def _find(
        self, t: Txn, table: Table, key: Mapping[str, Any], lock: bool = False
    ) -> Row | None:
        tail = " LIMIT 1" + (" FOR UPDATE OF t" if lock else "")
        sql, params = query(table, key, self._now(), tail)
        rows = await t.execute(sql, params)
        return load(table, rows[0]) if rows else None

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The live row named by its primary key or one unique column."""
        tb = self._table(table)
        check_key(tb, key)
        return await self._run(lambda t: self._find(t, tb, key))

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every live row matching ``filters``, in listing order."""
        tb = self._table(table)
        check_columns(tb, filters)
        sql, params = query(tb, filters, self._now(), order_by(tb))

        async def txn(t: Txn) -> list[Row]:
            return [load(tb, r) for r in await t.execute(sql, params)]

        return await self._run(txn)

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Keyset paging on (created_at, primary key); ``total`` from COUNT, same snapshot."""
        tb = self._table(table)
        check_columns(tb, filters)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        position = decode_offset(tb, offset) if offset is not None else None
        count_sql, count_params = query(tb, filters, self._now(), what="count(*)")
        sql, params = query(tb, filters, self._now())
        if position is not None:
            cond, extra = after(tb, position)
            sql += (" AND " if " WHERE " in sql else " WHERE ") + cond
            params += extra
        sql += order_by(tb) + " LIMIT %s"
        params.append(size + 1)

        async def txn(t: Txn) -> Page:
            await t.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            total = (await t.execute(count_sql, count_params))[0][0]
            rows = [load(tb, r) for r in await t.execute(sql, params)]
            token = encode_offset(tb, rows[size - 1]) if len(rows) > size else None
            return Page(rows=rows[:size], total=int(total), offset=token)

        return await self._run(txn)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """How many live rows match ``filters``."""
        tb = self._table(table)
        check_columns(tb, filters)
        sql, params = query(tb, filters, self._now(), what="count(*)")

        async def txn(t: Txn) -> int:
            return int((await t.execute(sql, params))[0][0])

        return await self._run(txn)

    async def update(
        self, table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Lock the row, UPDATE ... RETURNING, log the change; ``ttl`` restarts its clock."""
        tb = self._table(table)
        check_columns(tb, values)
        check_ttl(tb, ttl)
        check_key(tb, key)

        async def txn(t: Txn) -> Row | None:
            old = await self._find(t, tb, key, lock=True)
            if old is None:
                return None
            for c in tb.primary_key:
                if c in values and values[c] != old[c]:
                    raise ValueError(f"{table}: the primary key of a row cannot change")
            new = old
            if values:
                sets = ", ".join(f"{_quote(c)} = %s" for c in values)
                cond, wparams = where_pk(tb, old)
                rows = await t.execute(
                    f"UPDATE {_quote(table)} AS t SET {sets}{cond} RETURNING {select_list(tb)}",
                    [param(tb, c, v) for c, v in values.items()] + wparams,
                )
                new = load(tb, rows[0])
            if ttl is not None:
                await ttls.set_ttl(t, tb, new, ttl, self._now())
            await self._event(t, table, "update", old, new)
            return new

        return await self._run(txn)

    async def _collect(self, t: Txn, table: Table, row: Row) -> list[tuple[Table, Row]]:
        """The row and, locked, every row a deletion of it takes (:func:`~.common.cascade_rows`)."""

        async def dependants(child: Table, column: str, value: Any) -> list[Row]:
            sql, params = query(
                child, {column: value}, self._now(), order_by(child) + " FOR UPDATE OF t"
            )
            return [load(child, values) for values in await t.execute(sql, params)]

        return await cascade_rows(self._children, table, row, dependants)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the row (the database cascades) and return it with every cascaded row."""
        tb = self._table(table)
        check_key(tb, key)

        async def txn(t: Txn) -> list[tuple[str, Row]]:
            row = await self._find(t, tb, key, lock=True)
            if row is None:
                return []
            doomed = await self._collect(t, tb, row)
            cond, params = where_pk(tb, row)
            await t.execute(f"DELETE FROM {_quote(table)} AS t{cond}", params)
            for dt, drow in doomed:
                if dt.ttl:
                    await ttls.forget(t, dt, drow)
                await self._event(t, dt.name, "delete", drow, None)
            return [(dt.name, drow) for dt, drow in doomed]

        return await self._run(txn)

    # ------------------------------------------------------------------ change log

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` after ``seq``, oldest first."""
        return await self._run(lambda t: events.events_after(t, origin, seq, limit))

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""
        return await self._run(lambda t: events.events_since(t, at, limit))

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; per-origin sequences go on."""
        return await self._run(lambda t: events.prune_events(t, before))

    # ------------------------------------------------------------------ counters

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """Add ``amount`` to each named counter, one transaction (see :mod:`.counters`)."""
        tb = self._table(table)
        params = counters.key_params(tb, keys)
        if params:
            await self._run(lambda t: counters.increment(t, tb, params, amount))

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value (0 for a missing row), read in one snapshot."""
        tb = self._table(table)
        params = counters.key_params(tb, keys)
        if not params:
            return []
        return await self._run(lambda t: counters.read(t, tb, params))
