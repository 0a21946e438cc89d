# -*- test-case-name: tests.store.test_postgres_specific -*-
"""The PostgreSQL store, on txpostgres (psycopg2's asynchronous mode in the reactor).

Why our own small pool instead of ``txpostgres.ConnectionPool``: that class takes its
reactor as a class attribute (STYLE.md rule 16), and its cancellation calls psycopg2's
blocking ``connection.cancel()``, which would freeze the reactor thread against a hung
server.  Here each :class:`txpostgres.txpostgres.Connection` gets our injected reactor,
every statement runs under a timeout on the injected :class:`~kongtx.clock.Clock`, and a
connection that timed out or failed is closed and forgotten rather than cancelled: the
server rolls its transaction back when the socket goes.  New connections are opened on
demand, so the store reconnects by itself when the server comes back.

Constraints live in the database (UNIQUE, FOREIGN KEY ... ON DELETE CASCADE) and their
errors are parsed into :class:`UniqueViolation` / :class:`ForeignKeyViolation`.  A delete
first locks and reads the rows the cascade will remove, so it can return them and log an
event for each, all in one transaction with the change itself.

TTLs follow Kong 0.9's design (SPEC §7.1): the ``ttls`` table holds ``expire_at`` per
(table, primary key); every read of a TTL table joins it and hides expired rows (times
come from the injected clock, like every other backend), and a cleanup job on the clock
deletes them every 60 s.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionClosed
from twisted.python.failure import Failure
from txpostgres import txpostgres
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    ForeignKeyViolation,
    IStore,
    Page,
    Row,
    StoreError,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.tables import (
    CLUSTER_EVENTS,
    SCHEMA_MIGRATIONS,
    TABLES,
    TagFilter,
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    decode_offset,
    encode_offset,
    order_columns,
)

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1)
#: pg_advisory_xact_lock key of ``migrate``/``reset`` (any constant; "kongtx" in ASCII).
MIGRATION_LOCK = 0x6B6F6E677478
#: Tables the store itself keeps beside those of :data:`TABLES`.
INTERNAL_TABLES = ("ttls", CLUSTER_EVENTS.name, "cluster_events_seq", SCHEMA_MIGRATIONS.name)
_FUNCTIONS = (
    "upsert_schema_migrations",
    "upsert_ttl",
    "increment_rate_limits",
    "increment_response_rate_limits",
)
_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)")
#: SQLSTATEs that mean the connection (or the server) is gone, not that the query is wrong.
_CONNECTION_CLASSES = ("08", "57", "53")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class _Gone(Exception):
    """The connection died under a statement (wrapped so callers may retry once)."""

    def __init__(self, cause: BaseException, first: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.first = first


class _Txn:
    """One transaction on one pooled connection: ``execute`` with a timeout."""

    def __init__(self, store: PostgresStore, conn: Any, timeout: float) -> None:
        self._store = store
        self.conn = conn
        self.timeout = timeout
        self.statements = 0
        self.rowcount = -1

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (``[]`` when it returns none)."""
        first = self.statements == 0
        self.statements += 1
        try:
            cursor = self.conn.cursor()
            d = cursor.execute(sql, params)
        except (psycopg2.InterfaceError, psycopg2.OperationalError) as e:
            raise _Gone(e, first) from e
        try:
            await self._store._timed(d, self.conn, self.timeout)
        except (psycopg2.InterfaceError, psycopg2.OperationalError, ConnectionClosed) as e:
            raise _Gone(e, first) from e
        except psycopg2.Error as e:
            if (e.pgcode or "")[:2] in _CONNECTION_CLASSES:
                raise _Gone(e, first) from e
            raise
        self.rowcount = cursor.rowcount
        if cursor.description is None:
            return []
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


@implementer(IStore)
class PostgresStore:
    """An :class:`IStore` on PostgreSQL (9.5+; tested on Debian's 15)."""

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
        self.timeout = float(timeout)
        self.migration_timeout = max(float(migration_timeout), self.timeout)
        self._reactor = reactor
        self._dsn: dict[str, Any] = {
            "host": host,
            "port": int(port),
            "user": user,
            "dbname": database,
            "sslmode": ("verify-full" if ssl_verify else "require") if ssl else "disable",
            "application_name": f"kongtx {origin}"[:63],
        }
        if password:
            self._dsn["password"] = password
        self._pool_size = pool_size
        self._idle: list[Any] = []
        self._open: set[Any] = set()
        self._waiters: list[Deferred[Any]] = []
        self._cleanup_interval = ttl_cleanup_interval
        self._cleanup: Any = None
        self._stopped = False
        #: referenced table -> [(referencing table, fk)] for cascades.
        self._children: dict[str, list[tuple[Table, Any]]] = {}
        for child in self.tables.values():
            for fk in child.foreign_keys:
                self._children.setdefault(fk.table, []).append((child, fk))

    # ------------------------------------------------------------------ timeouts and pool

    def _timed(self, d: Deferred[Any], conn: Any, timeout: float) -> Deferred[Any]:
        """``d``'s result, or StoreUnavailable after ``timeout`` s (and ``conn`` is dropped).

        A fresh Deferred: cancelling txpostgres' own would call psycopg2's blocking
        cancel.  The abandoned Deferred's eventual failure is consumed here.
        """
        result: Deferred[Any] = Deferred(lambda _: self._discard(conn))

        def expired() -> None:
            if not result.called:
                # fail first: closing the connection may fire the abandoned Deferred at once
                result.errback(
                    Failure(StoreUnavailable(f"PostgreSQL did not answer within {timeout:g}s"))
                )
                self._discard(conn)

        call = self.clock.call_later(timeout, expired)

        def done(outcome: Any) -> None:
            if call.active():
                call.cancel()
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        d.addBoth(done)
        return result

    def _discard(self, conn: Any) -> None:
        """Forget ``conn`` and close its socket (never cancel: that call blocks)."""
        if conn is None:
            return
        if conn in self._idle:
            self._idle.remove(conn)
        if conn in self._open:
            self._open.discard(conn)
            try:
                conn.close()
            except Exception:
                self.log.debug("closing a dead PostgreSQL connection failed", log_failure=Failure())
        self._wake()

    def _wake(self) -> None:
        """A slot was freed: let the oldest waiter open a connection."""
        if self._waiters and len(self._open) < self._pool_size:
            waiter = self._waiters.pop(0)
            if not waiter.called:
                waiter.callback(None)

    def _release(self, conn: Any) -> None:
        if conn not in self._open:
            return
        if conn.closed:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.called:
                waiter.callback(conn)
                return
        self._idle.append(conn)

    async def _address(self) -> dict[str, Any]:
        """The DSN with ``hostaddr`` resolved off the reactor thread.

        libpq would otherwise resolve a host name synchronously inside the async connect
        and stall the reactor; ``host`` stays for TLS verification.
        """
        host = self._dsn["host"]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host.startswith("/"):
                return self._dsn  # a unix socket directory
            try:
                ip = await self._timed(self._reactor.resolve(host), None, self.timeout)
            except StoreUnavailable:
                raise
            except Exception as e:
                raise StoreUnavailable(f"cannot resolve PostgreSQL host {host!r}: {e}") from e
            return {**self._dsn, "hostaddr": ip}
        return self._dsn

    async def _connect(self) -> Any:
        dsn = await self._address()
        conn = txpostgres.Connection(reactor=self._reactor)
        self._open.add(conn)
        try:
            d = conn.connect(**dsn)
            await self._timed(d, conn, self.timeout)
        except StoreUnavailable:
            raise
        except CancelledError:
            self._discard(conn)
            raise
        except Exception as e:
            self._discard(conn)
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {str(e).strip()}") from e
        return conn

    async def _acquire(self) -> tuple[Any, bool]:
        """A connection and whether it was reused (a reused one may have died meanwhile)."""
        if self._stopped:
            raise StoreUnavailable("the PostgreSQL store is stopped")
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
            self._discard(conn)
        if len(self._open) < self._pool_size:
            return await self._connect(), False
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        try:
            conn = await self._timed(waiter, None, self.timeout)
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if conn is None:
            return await self._connect(), False
        return conn, True

    async def _run(self, body: Callable[[_Txn], Awaitable[T]], limit: float | None = None) -> T:
        """Run ``body`` in one transaction; map errors; retry once on a stale connection."""
        for _attempt in range(self._pool_size + 1):
            conn, reused = await self._acquire()
            txn = _Txn(self, conn, limit or self.timeout)
            try:
                await txn.execute("BEGIN")
                result = await body(txn)
                await txn.execute("COMMIT")
            except _Gone as e:
                self._discard(conn)
                if e.first and reused:
                    continue  # an idle connection the server closed meanwhile
                raise StoreUnavailable(f"lost the PostgreSQL connection: {e}") from e.cause
            except (StoreUnavailable, CancelledError):
                self._discard(conn)
                raise
            except psycopg2.IntegrityError as e:
                await self._rollback(txn)
                raise self._constraint_error(e) from e
            except BaseException:
                await self._rollback(txn)
                raise
            self._release(conn)
            return result
        raise StoreUnavailable("no usable PostgreSQL connection")

    async def _rollback(self, txn: _Txn) -> None:
        try:
            await txn.execute("ROLLBACK")
        except Exception:
            self._discard(txn.conn)
        else:
            self._release(txn.conn)

    @staticmethod
    def _constraint_error(e: psycopg2.IntegrityError) -> StoreError:
        """UniqueViolation / ForeignKeyViolation from the server's own message."""
        detail = getattr(e.diag, "message_detail", None) or ""
        match = _KEY_DETAIL.search(detail)
        if match:
            cols = match["cols"].replace('"', "")
            value: Any = match["vals"]
            if e.pgcode == "23505":
                return UniqueViolation(cols, value)
            if e.pgcode == "23503":
                return ForeignKeyViolation(cols.split(",")[0].strip(), value)
        if "violates foreign key constraint" in str(e):
            return ForeignKeyViolation(getattr(e.diag, "constraint_name", "") or "?", "")
        return StoreError(str(e).strip())

    # ------------------------------------------------------------------ SQL building

    def _table(self, name: str) -> Table:
        return self.tables[name]

    @staticmethod
    def _expr(table: Table, col: str, alias: str = "t") -> str:
        ref = f"{alias}.{_quote(col)}"
        kind = table.column(col).type
        if kind == "timestamp":
            return f"(extract(epoch from {ref}) * 1000)::bigint"
        if kind in ("json", "uuid"):
            return f"{ref}::text"
        return ref

    def _select_list(self, table: Table) -> str:
        return ", ".join(self._expr(table, c) for c in table.column_names)

    @staticmethod
    def _param(table: Table, col: str, value: Any) -> Any:
        """A Python value as PostgreSQL wants it for ``col``."""
        if value is None:
            return None
        kind = table.column(col).type
        if kind == "timestamp":
            return _EPOCH + timedelta(milliseconds=value)
        if kind == "json":
            return json.dumps(value)
        return value

    @staticmethod
    def _load(table: Table, values: Sequence[Any]) -> Row:
        row: Row = {}
        for col, value in zip(table.column_names, values, strict=True):
            kind = table.column(col).type
            if value is not None:
                if kind == "json":
                    value = json.loads(value)
                elif kind in ("timestamp", "integer"):
                    value = int(value)
                elif kind == "number":
                    value = float(value)
            row[col] = value
        return row

    def _now(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.clock.seconds())

    def _from(self, table: Table) -> tuple[str, list[Any]]:
        """``FROM`` clause hiding expired TTL rows, and its parameters."""
        sql = f"FROM {_quote(table.name)} AS t"
        if not table.ttl:
            return sql, []
        (pk,) = table.primary_key
        sql += (
            " LEFT JOIN ttls ON ttls.table_name = %s"
            f" AND ttls.primary_key_value = t.{_quote(pk)}::text"
        )
        return sql, [table.name]

    def _where(self, table: Table, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if table.ttl:
            parts.append("(ttls.expire_at IS NULL OR ttls.expire_at > %s)")
            params.append(self._now())
        for col, value in filters.items():
            ref = f"t.{_quote(col)}"
            kind = table.column(col).type
            if isinstance(value, TagFilter):
                # jsonb's ?& (all) / ?| (any) keep the filter inside the query (GIN index)
                op = "?&" if value.mode == "all" else "?|"
                parts.append(f"({ref})::jsonb {op} %s::text[]")
                params.append(list(value.tags))
            elif value is None:
                parts.append(f"{ref} IS NULL")
            elif kind == "uuid" and not _is_uuid(value):
                parts.append("FALSE")  # no uuid column holds a non-uuid
            elif kind == "json":
                parts.append(f"{ref}::jsonb = %s::jsonb")
                params.append(json.dumps(value))
            else:
                parts.append(f"{ref} = %s")
                params.append(self._param(table, col, value))
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def _query(
        self, table: Table, filters: Mapping[str, Any], tail: str = "", what: str | None = None
    ) -> tuple[str, list[Any]]:
        frm, p1 = self._from(table)
        where, p2 = self._where(table, filters)
        return f"SELECT {what or self._select_list(table)} {frm}{where}{tail}", p1 + p2

    def _order_by(self, table: Table) -> str:
        return " ORDER BY " + ", ".join(
            f"t.{_quote(c)} ASC NULLS FIRST" for c in order_columns(table)
        )

    def _key_filters(self, table: Table, row: Row) -> dict[str, Any]:
        return {c: row[c] for c in table.primary_key}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open one connection (fails with StoreUnavailable) and start the TTL cleanup job."""
        self._stopped = False
        await self.ping()
        if self._cleanup is None and any(t.ttl for t in self.tables.values()):
            self._cleanup = self.clock.looping_call(self._cleanup_interval, self._cleanup_ttls)

    async def stop(self) -> None:
        """Stop the cleanup job and close every connection."""
        self._stopped = True
        if self._cleanup is not None:
            if self._cleanup.running:
                self._cleanup.stop()
            self._cleanup = None
        for waiter in self._waiters:
            if not waiter.called:
                waiter.errback(Failure(StoreUnavailable("the PostgreSQL store is stopping")))
        self._waiters = []
        for conn in list(self._open):
            self._discard(conn)

    async def ping(self) -> None:
        """``SELECT 1``; raises StoreUnavailable when the server is gone."""

        async def txn(t: _Txn) -> None:
            await t.execute("SELECT 1")

        await self._run(txn)

    async def _cleanup_ttls(self) -> int:
        """Delete expired rows (and their ``ttls`` entries); returns how many rows went."""
        ttl_tables = [t for t in self.tables.values() if t.ttl]

        async def txn(t: _Txn) -> int:
            gone = 0
            now = self._now()
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

        try:
            exists = await self._run(self._has_ttls)
            if not exists:
                return 0
            return await self._run(txn)
        except StoreUnavailable as e:
            self.log.info("TTL cleanup skipped: {error}", error=str(e))
            return 0

    @staticmethod
    async def _has_ttls(t: _Txn) -> bool:
        rows = await t.execute("SELECT to_regclass('ttls') IS NOT NULL")
        return bool(rows[0][0])

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Run pending migrations in one transaction under a PostgreSQL advisory lock.

        Two nodes starting together: the second waits on the lock, then finds every
        migration recorded and returns ``[]``.  DDL is transactional in PostgreSQL, so a
        failing migration leaves the schema as it was before this call.
        """

        async def txn(t: _Txn) -> list[str]:
            await t.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            await t.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (id text PRIMARY KEY, migrations varchar(100)[])"
            )
            done = {
                k: list(v or [])
                for k, v in await t.execute("SELECT id, migrations FROM schema_migrations")
            }
            ran: list[str] = []
            for identifier, entries in migrations.items():
                recorded = done.setdefault(identifier, [])
                for name, script in entries:
                    if name in recorded:
                        continue
                    await t.execute("SAVEPOINT migration")
                    try:
                        await t.execute(script)
                    except psycopg2.Error as e:
                        raise StoreError(
                            f"[postgres error] Error during migration {name}: {str(e).strip()}"
                        ) from e
                    await t.execute("RELEASE SAVEPOINT migration")
                    await t.execute(
                        "INSERT INTO schema_migrations (id, migrations) VALUES (%s, ARRAY[%s]::varchar(100)[])"
                        " ON CONFLICT (id) DO UPDATE"
                        " SET migrations = array_append(schema_migrations.migrations, %s)",
                        [identifier, name, name],
                    )
                    recorded.append(name)
                    ran.append(f"{identifier}: {name}")
            return ran

        return await self._run(txn, self.migration_timeout)

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run (``{}`` on an empty database)."""

        async def txn(t: _Txn) -> dict[str, list[str]]:
            exists = await t.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not exists[0][0]:
                return {}
            rows = await t.execute("SELECT id, migrations FROM schema_migrations ORDER BY id")
            return {k: list(v) for k, v in rows if v}

        return await self._run(txn)

    async def reset(self) -> None:
        """Drop every table and function the migrations create, under the migration lock."""

        async def txn(t: _Txn) -> None:
            await t.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            for name in [*self.tables, *INTERNAL_TABLES]:
                await t.execute(f"DROP TABLE IF EXISTS {_quote(name)} CASCADE")
            for fn in _FUNCTIONS:
                await t.execute(f"DROP FUNCTION IF EXISTS {fn} CASCADE")

        await self._run(txn, self.migration_timeout)

    # ------------------------------------------------------------------ rows

    async def _event(
        self, t: _Txn, collection: str, kind: ChangeType, old: Row | None, new: Row | None
    ) -> None:
        rows = await t.execute(
            "INSERT INTO cluster_events_seq (origin, seq) VALUES (%s, 1)"
            " ON CONFLICT (origin) DO UPDATE SET seq = cluster_events_seq.seq + 1 RETURNING seq",
            [self.origin],
        )
        await t.execute(
            "INSERT INTO cluster_events (origin, seq, at, collection, type, old, new, extra)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                self.origin,
                rows[0][0],
                self.clock.millis(),
                collection,
                kind,
                None if old is None else json.dumps(old),
                None if new is None else json.dumps(new),
                "{}",
            ],
        )

    async def _set_ttl(self, t: _Txn, table: Table, row: Row, ttl: int) -> None:
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
                self._now() + timedelta(seconds=ttl),
            ],
        )

    async def _purge_expired(self, t: _Txn, table: Table) -> None:
        """Remove expired rows of ``table`` so they cannot collide with a new one."""
        (pk,) = table.primary_key
        now = self._now()
        await t.execute(
            f"DELETE FROM {_quote(table.name)} AS t USING ttls WHERE ttls.table_name = %s"
            f" AND ttls.primary_key_value = t.{_quote(pk)}::text AND ttls.expire_at <= %s",
            [table.name, now],
        )
        await t.execute(
            "DELETE FROM ttls WHERE table_name = %s AND expire_at <= %s", [table.name, now]
        )

    async def insert(self, table: str, row: Row, ttl: int | None = None) -> Row:
        """INSERT ... RETURNING, its ``create`` event and its TTL, in one transaction."""
        tb = self._table(table)
        check_columns(tb, row)
        check_ttl(tb, ttl)
        for c in tb.primary_key:
            if row.get(c) is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        cols = tb.column_names
        params = [self._param(tb, c, row.get(c)) for c in cols]

        async def txn(t: _Txn) -> Row:
            if tb.ttl:
                await self._purge_expired(t, tb)
            rows = await t.execute(
                f"INSERT INTO {_quote(table)} AS t ({', '.join(_quote(c) for c in cols)})"
                f" VALUES ({', '.join(['%s'] * len(cols))}) RETURNING {self._select_list(tb)}",
                params,
            )
            new = self._load(tb, rows[0])
            if ttl is not None:
                await self._set_ttl(t, tb, new, ttl)
            await self._event(t, table, "create", None, new)
            return new

        return await self._run(txn)

    async def _find(
        self, t: _Txn, table: Table, key: Mapping[str, Any], lock: bool = False
    ) -> Row | None:
        sql, params = self._query(table, key, " LIMIT 1" + (" FOR UPDATE OF t" if lock else ""))
        rows = await t.execute(sql, params)
        return self._load(table, rows[0]) if rows else None

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The live row named by its primary key or one unique column."""
        tb = self._table(table)
        check_key(tb, key)
        return await self._run(lambda t: self._find(t, tb, key))

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every live row matching ``filters``, in listing order."""
        tb = self._table(table)
        check_columns(tb, filters)
        sql, params = self._query(tb, filters, self._order_by(tb))

        async def txn(t: _Txn) -> list[Row]:
            return [self._load(tb, r) for r in await t.execute(sql, params)]

        return await self._run(txn)

    def _after(self, table: Table, position: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL for "sorts after ``position``" in :func:`order_columns` order, NULLs first."""
        cols = order_columns(table)
        alternatives: list[str] = []
        params: list[Any] = []
        for i, col in enumerate(cols):
            terms: list[str] = []
            for prev, value in zip(cols[:i], position[:i], strict=True):
                if value is None:
                    terms.append(f"t.{_quote(prev)} IS NULL")
                else:
                    terms.append(f"t.{_quote(prev)} = %s")
                    params.append(self._param(table, prev, value))
            value = position[i]
            if value is None:
                terms.append(f"t.{_quote(col)} IS NOT NULL")
            else:
                terms.append(f"t.{_quote(col)} > %s")
                params.append(self._param(table, col, value))
            alternatives.append("(" + " AND ".join(terms) + ")")
        return "(" + " OR ".join(alternatives) + ")", params

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Keyset paging on (created_at, primary key); ``total`` from COUNT, same snapshot."""
        tb = self._table(table)
        check_columns(tb, filters)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        position = decode_offset(tb, offset) if offset is not None else None
        count_sql, count_params = self._query(tb, filters, what="count(*)")
        sql, params = self._query(tb, filters)
        if position is not None:
            cond, extra = self._after(tb, position)
            sql += (" AND " if " WHERE " in sql else " WHERE ") + cond
            params += extra
        sql += self._order_by(tb) + " LIMIT %s"
        params.append(size + 1)

        async def txn(t: _Txn) -> Page:
            await t.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            total = (await t.execute(count_sql, count_params))[0][0]
            rows = [self._load(tb, r) for r in await t.execute(sql, params)]
            token = encode_offset(tb, rows[size - 1]) if len(rows) > size else None
            return Page(rows=rows[:size], total=int(total), offset=token)

        return await self._run(txn)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """How many live rows match ``filters``."""
        tb = self._table(table)
        check_columns(tb, filters)
        sql, params = self._query(tb, filters, what="count(*)")

        async def txn(t: _Txn) -> int:
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

        async def txn(t: _Txn) -> Row | None:
            old = await self._find(t, tb, key, lock=True)
            if old is None:
                return None
            for c in tb.primary_key:
                if c in values and values[c] != old[c]:
                    raise ValueError(f"{table}: the primary key of a row cannot change")
            new = old
            if values:
                sets = ", ".join(f"{_quote(c)} = %s" for c in values)
                where, wparams = self._where_pk(tb, old)
                rows = await t.execute(
                    f"UPDATE {_quote(table)} AS t SET {sets}{where} RETURNING {self._select_list(tb)}",
                    [self._param(tb, c, v) for c, v in values.items()] + wparams,
                )
                new = self._load(tb, rows[0])
            if ttl is not None:
                await self._set_ttl(t, tb, new, ttl)
            await self._event(t, table, "update", old, new)
            return new

        return await self._run(txn)

    def _where_pk(self, table: Table, row: Row) -> tuple[str, list[Any]]:
        parts = [f"t.{_quote(c)} = %s" for c in table.primary_key]
        return " WHERE " + " AND ".join(parts), [
            self._param(table, c, row[c]) for c in table.primary_key
        ]

    async def _collect(
        self, t: _Txn, table: Table, row: Row, out: list[tuple[Table, Row]], seen: set[Any]
    ) -> None:
        """Depth-first, locking: the row, then (per referencing table) its dependants."""
        mark = (table.name, tuple(row[c] for c in table.primary_key))
        if mark in seen:
            return
        seen.add(mark)
        out.append((table, row))
        for child, fk in self._children.get(table.name, []):
            if row[fk.target] is None:
                continue
            sql, params = self._query(
                child, {fk.column: row[fk.target]}, self._order_by(child) + " FOR UPDATE OF t"
            )
            for values in await t.execute(sql, params):
                await self._collect(t, child, self._load(child, values), out, seen)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the row (the database cascades) and return it with every cascaded row."""
        tb = self._table(table)
        check_key(tb, key)

        async def txn(t: _Txn) -> list[tuple[str, Row]]:
            row = await self._find(t, tb, key, lock=True)
            if row is None:
                return []
            doomed: list[tuple[Table, Row]] = []
            await self._collect(t, tb, row, doomed, set())
            where, params = self._where_pk(tb, row)
            await t.execute(f"DELETE FROM {_quote(table)} AS t{where}", params)
            for dt, drow in doomed:
                if dt.ttl:
                    (pk,) = dt.primary_key
                    await t.execute(
                        "DELETE FROM ttls WHERE table_name = %s AND primary_key_value = %s",
                        [dt.name, str(drow[pk])],
                    )
                await self._event(t, dt.name, "delete", drow, None)
            return [(dt.name, drow) for dt, drow in doomed]

        return await self._run(txn)

    # ------------------------------------------------------------------ change log

    @staticmethod
    def _to_event(values: Sequence[Any]) -> ChangeEvent:
        origin, seq, at, collection, kind, old, new, extra = values
        return ChangeEvent(
            origin=origin,
            seq=int(seq),
            at=int(at),
            collection=collection,
            type=kind,
            old=None if old is None else json.loads(old),
            new=None if new is None else json.loads(new),
            extra={} if extra is None else json.loads(extra),
        )

    _EVENT_COLS = "origin, seq, at, collection, type, old::text, new::text, extra::text"

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` after ``seq``, oldest first."""

        async def txn(t: _Txn) -> list[ChangeEvent]:
            rows = await t.execute(
                f"SELECT {self._EVENT_COLS} FROM cluster_events"
                " WHERE origin = %s AND seq > %s ORDER BY seq LIMIT %s",
                [origin, seq, limit],
            )
            return [self._to_event(r) for r in rows]

        return await self._run(txn)

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""

        async def txn(t: _Txn) -> list[ChangeEvent]:
            rows = await t.execute(
                f"SELECT {self._EVENT_COLS} FROM cluster_events"
                " WHERE at >= %s ORDER BY at, origin, seq LIMIT %s",
                [at, limit],
            )
            return [self._to_event(r) for r in rows]

        return await self._run(txn)

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; per-origin sequences go on."""

        async def txn(t: _Txn) -> int:
            await t.execute("DELETE FROM cluster_events WHERE at < %s", [before])
            return int(t.rowcount)

        return await self._run(txn)

    # ------------------------------------------------------------------ counters

    def _counter_params(self, table: Table, keys: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Primary-key parameters of each counter key (ValueError / KeyError on misuse)."""
        out: list[list[Any]] = []
        for key in keys:
            check_columns(table, key)
            if "value" in key:
                raise ValueError(f"{table.name}: a counter key cannot hold the value column")
            if any(key.get(c) is None for c in table.primary_key):
                raise ValueError(
                    f"{table.name}: a counter key needs the primary key {table.primary_key}"
                )
            out.append([self._param(table, c, key[c]) for c in table.primary_key])
        return out

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE SET value = value + n`` per key, one transaction.

        Keys are taken in a fixed order so that two nodes incrementing the same set of
        counters lock their rows in the same order and cannot deadlock.
        """
        tb = self._table(table)
        params = sorted(self._counter_params(tb, keys), key=repr)
        pk = ", ".join(_quote(c) for c in tb.primary_key)
        sql = (
            f"INSERT INTO {_quote(table)} AS t ({pk}, value)"
            f" VALUES ({', '.join(['%s'] * len(tb.primary_key))}, %s)"
            f" ON CONFLICT ({pk}) DO UPDATE SET value = coalesce(t.value, 0) + EXCLUDED.value"
        )

        async def txn(t: _Txn) -> None:
            for p in params:
                await t.execute(sql, [*p, amount])

        if params:
            await self._run(txn)

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value (0 for a missing row), read in one snapshot."""
        tb = self._table(table)
        params = self._counter_params(tb, keys)
        where = " AND ".join(f"{_quote(c)} = %s" for c in tb.primary_key)
        sql = f"SELECT value FROM {_quote(table)} WHERE {where}"

        async def txn(t: _Txn) -> list[int]:
            await t.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            out: list[int] = []
            for p in params:
                found = await t.execute(sql, p)
                out.append(int(found[0][0] or 0) if found else 0)
            return out

        if not params:
            return []
        return await self._run(txn)
