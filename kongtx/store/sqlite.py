# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""The embedded datastore: stdlib ``sqlite3`` on one dedicated thread.

Why sqlite is the default (SPEC's table of differences): a newcomer's first
``kong start`` needs no database server.  Why one thread: a sqlite connection
belongs to the thread that opened it, and the reactor thread must never wait on
disk or on another process's lock; so every query runs on a private
``ThreadPool(1, 1)`` through ``deferToThreadPool`` and the coroutine awaits it.

How the contract is kept:

* **Transactions.**  Each write runs in ``BEGIN IMMEDIATE`` (writers queue on
  ``busy_timeout`` instead of failing on a lock upgrade) together with its
  ``cluster_events`` rows, so a change and its invalidation commit together.
* **Unique and foreign keys** are checked first, inside that transaction (the
  error names the field and value as the Admin API needs them); the schema's
  own constraints remain as a safety net and their errors are parsed the same way.
* **Cascades.**  ``PRAGMA foreign_keys=ON`` with ``ON DELETE CASCADE`` in the
  schema; the store still selects every dependant row first, in the same
  transaction, to return it and write its delete event.
* **TTL.**  TTL tables carry a private ``kong_expire_at`` column (epoch ms);
  reads hide expired rows, every write transaction first deletes them (so an
  expired row never blocks a unique key), and a periodic sweep on the injected
  :class:`~kongtx.clock.Clock` deletes the rest.  "Now" is read on the reactor
  thread, from that clock, and passed to the query.
* **Processes sharing one file**: WAL journal, ``busy_timeout``, and migrations
  under ``BEGIN EXCLUSIVE`` so that nodes starting together migrate once.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
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
    TagFilter,
    canonical_json,
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    decode_offset,
    encode_offset,
    order_columns,
)

T = TypeVar("T")

#: The private TTL column of TTL tables (epoch ms; NULL = never expires).
EXPIRE_COLUMN = "kong_expire_at"

_UNIQUE_ERROR = re.compile(r"UNIQUE constraint failed: (?P<cols>.+)$")


class _Loop(Protocol):
    """What the store keeps of the sweep's looping call (started through the Clock)."""

    running: bool

    def stop(self) -> None: ...


def _q(name: str) -> str:
    """Quote an identifier (``group`` and ``key`` are SQL keywords)."""
    return '"' + name.replace('"', '""') + '"'


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


class _Codec:
    """Python values <-> sqlite values, column by column."""

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
        self._codecs = {name: _Codec(t) for name, t in self.tables.items()}
        self._pool: ThreadPool | None = None
        self._sweeper: _Loop | None = None
        # Touched only on the pool's thread.
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ thread plumbing

    async def _run(self, fn: Callable[..., T], *args: Any, timed: bool = True) -> T:
        """Run ``fn(connection, ...)`` on the store's thread; map sqlite errors to store errors.

        ``timed`` calls fail with StoreUnavailable after ``query_timeout`` on the
        Clock (a query stuck behind a hung disk or a long queue must not hang an
        Admin request); the thread's late answer is then dropped.  Migrations are
        not timed: they may legitimately wait for another node's.
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the sqlite store is not started")
        d = deferToThreadPool(self.reactor, pool, self._guarded, fn, *args)
        if not timed:
            return await d
        expired: list[bool] = []

        def give_up() -> None:
            expired.append(True)
            d.cancel()

        timer = self.clock.call_later(self.query_timeout, give_up)
        try:
            return await d
        except CancelledError:
            if expired:
                raise StoreUnavailable(
                    f"sqlite did not answer within {self.query_timeout} s"
                ) from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            conn = self._connection()
            return fn(conn, *args)
        except sqlite3.IntegrityError as e:
            raise StoreError(f"[sqlite error] {e}") from e
        except sqlite3.OperationalError as e:
            message = str(e)
            if message.startswith(("no such table", "no such column")):
                raise StoreError(f"[sqlite error] {message} (run `kong migrations up`)") from e
            raise StoreUnavailable(f"[sqlite error] {message}") from e
        except sqlite3.Error as e:
            raise StoreUnavailable(f"[sqlite error] {e}") from e

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                # busy_timeout first: switching to WAL takes a lock another process may hold.
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[], T], mode: str = "IMMEDIATE") -> T:
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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the thread, open the file (WAL, foreign keys) and the TTL sweep."""
        if self._pool is not None:
            return
        self._pool = ThreadPool(1, 1, name=f"kongtx-sqlite-{self.origin}")
        self._pool.start()
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
        pool = self._pool
        if pool is None:
            return
        try:
            await deferToThreadPool(self.reactor, pool, self._close)
        finally:
            self._pool = None
            # The thread is idle now (the close ran last), so joining it does not wait.
            pool.stop()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def ping(self) -> None:
        """``SELECT 1`` on the store's thread."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def sweep(self) -> int:
        """Delete expired TTL rows now; returns how many (the periodic job calls this)."""
        now = self.clock.millis()
        return await self._run(self._sweep_txn, now)

    def _sweep_txn(self, conn: sqlite3.Connection, now: int) -> int:
        def body() -> int:
            present = {
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            # A plugin's tables exist only once its migrations ran.
            return sum(
                self._purge(conn, t, now)
                for t in self.tables.values()
                if t.ttl and t.name in present
            )

        return self._write(conn, body)

    @staticmethod
    def _purge(conn: sqlite3.Connection, table: Table, now: int) -> int:
        """Delete ``table``'s expired rows, so that they never block a unique key."""
        if not table.ttl:
            return 0
        cur = conn.execute(
            f"DELETE FROM {_q(table.name)} WHERE {EXPIRE_COLUMN} IS NOT NULL"
            f" AND {EXPIRE_COLUMN} <= ?",
            (now,),
        )
        return max(cur.rowcount, 0)

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Run pending migrations under ``BEGIN EXCLUSIVE`` (concurrent starters migrate once)."""
        plan = [(i, list(entries)) for i, entries in migrations.items()]
        return await self._run(self._migrate_txn, plan, timed=False)

    def _migrate_txn(
        self, conn: sqlite3.Connection, plan: list[tuple[str, list[tuple[str, str]]]]
    ) -> list[str]:
        def body() -> list[str]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (id TEXT PRIMARY KEY, migrations TEXT NOT NULL)"
            )
            done = self._executed(conn)
            ran: list[str] = []
            for identifier, entries in plan:
                names = done.setdefault(identifier, [])
                for name, script in entries:
                    if name in names:
                        continue
                    try:
                        for statement in split_statements(script):
                            conn.execute(statement)
                    except (sqlite3.Error, ValueError) as e:
                        raise StoreError(
                            f"[sqlite error] Error during migration {name}: {e}"
                        ) from e
                    names.append(name)
                    conn.execute(
                        "INSERT INTO schema_migrations (id, migrations) VALUES (?, ?)"
                        " ON CONFLICT (id) DO UPDATE SET migrations = excluded.migrations",
                        (identifier, json.dumps(names)),
                    )
                    ran.append(f"{identifier}: {name}")
            return ran

        return self._write(conn, body, "EXCLUSIVE")

    @staticmethod
    def _executed(conn: sqlite3.Connection) -> dict[str, list[str]]:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return {}
        rows = conn.execute("SELECT id, migrations FROM schema_migrations ORDER BY rowid")
        return {ident: list(json.loads(names)) for ident, names in rows}

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run, from ``schema_migrations``."""
        found = await self._run(self._executed)
        return {k: v for k, v in found.items() if v}

    async def reset(self) -> None:
        """Drop every table in the file (``kong migrations reset``), children first."""
        await self._run(self._reset_txn, timed=False)

    def _reset_txn(self, conn: sqlite3.Connection) -> None:
        def body() -> None:
            names = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%' ORDER BY rowid DESC"
                )
            ]
            for name in names:
                conn.execute(f"DROP TABLE IF EXISTS {_q(name)}")

        self._write(conn, body, "EXCLUSIVE")

    # ------------------------------------------------------------------ query building

    def _table(self, name: str) -> tuple[Table, _Codec]:
        return self.tables[name], self._codecs[name]

    def _where(
        self, table: Table, filters: Mapping[str, Any], now: int
    ) -> tuple[list[str], list[Any]]:
        codec = self._codecs[table.name]
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in filters.items():
            if isinstance(value, TagFilter):
                clauses.append(self._tag_clause(column, value))
                params.extend(value.tags)
            elif value is None:
                clauses.append(f"{_q(column)} IS NULL")
            else:
                clauses.append(f"{_q(column)} = ?")
                params.append(codec.encode(column, value))
        if table.ttl:
            clauses.append(f"({EXPIRE_COLUMN} IS NULL OR {EXPIRE_COLUMN} > ?)")
            params.append(now)
        return clauses, params

    @staticmethod
    def _tag_clause(column: str, wanted: TagFilter) -> str:
        """SQL for a tag filter: one ``json_each`` membership test per tag, ANDed or ORed.

        Done inside the query (not after it) so that ``LIMIT``, keyset paging and
        ``COUNT`` see exactly the rows the filter keeps.
        """
        test = f"EXISTS (SELECT 1 FROM json_each({_q(column)}) WHERE json_each.value = ?)"
        joiner = " AND " if wanted.mode == "all" else " OR "
        return "(" + joiner.join(test for _ in wanted.tags) + ")"

    @staticmethod
    def _after(columns: Sequence[str], position: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL for "sorts after ``position``" under ``ORDER BY columns`` (NULLs first)."""
        column, value = columns[0], position[0]
        greater = f"{_q(column)} IS NOT NULL" if value is None else f"{_q(column)} > ?"
        equal = f"{_q(column)} IS NULL" if value is None else f"{_q(column)} = ?"
        mine = [] if value is None else [value]
        if len(columns) == 1:
            return greater, mine
        rest, rest_params = SqliteStore._after(columns[1:], position[1:])
        return f"({greater} OR ({equal} AND {rest}))", [*mine, *mine, *rest_params]

    def _select_rows(
        self,
        conn: sqlite3.Connection,
        table: Table,
        filters: Mapping[str, Any],
        now: int,
        *,
        after: Sequence[Any] | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        codec = self._codecs[table.name]
        clauses, params = self._where(table, filters, now)
        order = order_columns(table)
        if after is not None:
            clause, extra = self._after(order, after)
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

    def _count(
        self, conn: sqlite3.Connection, table: Table, filters: Mapping[str, Any], now: int
    ) -> int:
        clauses, params = self._where(table, filters, now)
        sql = f"SELECT COUNT(*) FROM {_q(table.name)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        (n,) = conn.execute(sql, params).fetchone()
        return int(n)

    def _find(
        self, conn: sqlite3.Connection, table: Table, key: Mapping[str, Any], now: int
    ) -> Row | None:
        rows = self._select_rows(conn, table, key, now, limit=1)
        return rows[0] if rows else None

    def _pk_filter(self, table: Table, row: Row) -> dict[str, Any]:
        return {c: row[c] for c in table.primary_key}

    def _check_constraints(
        self, conn: sqlite3.Connection, table: Table, row: Row, own: Row | None, now: int
    ) -> None:
        """UniqueViolation / ForeignKeyViolation, unique first (as Postgres reports them)."""
        own_pk = self._pk_filter(table, own) if own is not None else None
        for column in table.unique:
            value = row[column]
            if value is None or (own is not None and own[column] == value):
                continue
            holder = self._find(conn, table, {column: value}, now)
            if holder is not None and self._pk_filter(table, holder) != own_pk:
                raise UniqueViolation(column, value)
        for fk in table.foreign_keys:
            value = row[fk.column]
            if value is None or (own is not None and own[fk.column] == value):
                continue
            target = self.tables[fk.table]
            if self._count(conn, target, {fk.target: value}, now) == 0:
                raise ForeignKeyViolation(fk.column, value)

    def _integrity(self, table: Table, row: Row, error: sqlite3.IntegrityError) -> StoreError:
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

    def _events(
        self,
        conn: sqlite3.Connection,
        changes: Sequence[tuple[str, ChangeType, Row | None, Row | None]],
        now: int,
    ) -> None:
        """Append one cluster_events row per change, numbering them after this origin's last."""
        found = conn.execute(
            "SELECT seq FROM cluster_event_seqs WHERE origin = ?", (self.origin,)
        ).fetchone()
        seq = int(found[0]) if found is not None else 0
        for collection, kind, old, new in changes:
            seq += 1
            conn.execute(
                "INSERT INTO cluster_events (origin, seq, at, collection, type, old, new, extra)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, '{}')",
                (
                    self.origin,
                    seq,
                    now,
                    collection,
                    kind,
                    None if old is None else canonical_json(old),
                    None if new is None else canonical_json(new),
                ),
            )
        conn.execute(
            "INSERT INTO cluster_event_seqs (origin, seq) VALUES (?, ?)"
            " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq",
            (self.origin, seq),
        )

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
        return await self._run(self._insert_txn, t, full, expire_at, now)

    def _insert_txn(
        self, conn: sqlite3.Connection, table: Table, row: Row, expire_at: int | None, now: int
    ) -> Row:
        codec = self._codecs[table.name]

        def body() -> Row:
            self._purge(conn, table, now)
            if self._find(conn, table, self._pk_filter(table, row), now) is not None:
                pk = table.primary_key
                raise UniqueViolation(", ".join(pk), ", ".join(str(row[c]) for c in pk))
            self._check_constraints(conn, table, row, None, now)
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
                raise self._integrity(table, row, e) from e
            stored = self._find(conn, table, self._pk_filter(table, row), now)
            assert stored is not None
            self._events(conn, [(table.name, "create", None, stored)], now)
            return stored

        return self._write(conn, body)

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The live row named by its primary key or one unique column, or ``None``."""
        t, _ = self._table(table)
        check_key(t, key)
        now = self.clock.millis()
        return await self._run(self._find, t, dict(key), now)

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every live row matching ``filters``, in listing order."""
        t, _ = self._table(table)
        check_columns(t, filters)
        now = self.clock.millis()
        return await self._run(lambda conn: self._select_rows(conn, t, dict(filters), now))

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Keyset paging: rows after the token's position, ``size + 1`` fetched to see a next page."""
        t, _ = self._table(table)
        check_columns(t, filters)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        position = decode_offset(t, offset) if offset is not None else None
        now = self.clock.millis()
        wanted = dict(filters)

        def read(conn: sqlite3.Connection) -> Page:
            def body() -> Page:
                rows = self._select_rows(conn, t, wanted, now, after=position, limit=size + 1)
                total = self._count(conn, t, wanted, now)
                token = encode_offset(t, rows[size - 1]) if len(rows) > size else None
                return Page(rows=rows[:size], total=total, offset=token)

            # One read transaction: the page and its total come from the same snapshot.
            return self._write(conn, body, "DEFERRED")

        return await self._run(read)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """How many live rows match ``filters``."""
        t, _ = self._table(table)
        check_columns(t, filters)
        now = self.clock.millis()
        return await self._run(self._count, t, dict(filters), now)

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
        return await self._run(self._update_txn, t, dict(key), dict(values), expire_at, now)

    def _update_txn(
        self,
        conn: sqlite3.Connection,
        table: Table,
        key: dict[str, Any],
        values: Row,
        expire_at: int | None,
        now: int,
    ) -> Row | None:
        codec = self._codecs[table.name]

        def body() -> Row | None:
            self._purge(conn, table, now)
            old = self._find(conn, table, key, now)
            if old is None:
                return None
            new = {**old, **values}
            pk = self._pk_filter(table, old)
            if self._pk_filter(table, new) != pk:
                raise ValueError(f"{table.name}: the primary key of a row cannot change")
            self._check_constraints(conn, table, new, old, now)
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
                    raise self._integrity(table, new, e) from e
            stored = self._find(conn, table, pk, now)
            assert stored is not None
            self._events(conn, [(table.name, "update", old, stored)], now)
            return stored

        return self._write(conn, body)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the named row and its dependants; returns them all, the named row first."""
        t, _ = self._table(table)
        check_key(t, key)
        now = self.clock.millis()
        return await self._run(self._delete_txn, t, dict(key), now)

    def _delete_txn(
        self, conn: sqlite3.Connection, table: Table, key: dict[str, Any], now: int
    ) -> list[tuple[str, Row]]:
        def body() -> list[tuple[str, Row]]:
            self._purge(conn, table, now)
            row = self._find(conn, table, key, now)
            if row is None:
                return []
            doomed: list[tuple[Table, Row]] = []
            self._collect(conn, table, row, now, doomed, set())
            # Deepest first, so the delete never leans on the schema's cascade being there.
            for dt, drow in reversed(doomed):
                pk = self._pk_filter(dt, drow)
                where = " AND ".join(f"{_q(c)} = ?" for c in pk)
                conn.execute(f"DELETE FROM {_q(dt.name)} WHERE {where}", list(pk.values()))
            self._events(conn, [(dt.name, "delete", drow, None) for dt, drow in doomed], now)
            return [(dt.name, drow) for dt, drow in doomed]

        return self._write(conn, body)

    def _collect(
        self,
        conn: sqlite3.Connection,
        table: Table,
        row: Row,
        now: int,
        out: list[tuple[Table, Row]],
        seen: set[tuple[str, tuple[Any, ...]]],
    ) -> None:
        """Depth-first: the row, then (per referencing table, in listing order) its dependants."""
        mark = (table.name, tuple(row[c] for c in table.primary_key))
        if mark in seen:
            return
        seen.add(mark)
        out.append((table, row))
        for child in self.tables.values():
            for fk in child.foreign_keys:
                if fk.table != table.name or row[fk.target] is None:
                    continue
                for dependant in self._select_rows(conn, child, {fk.column: row[fk.target]}, now):
                    self._collect(conn, child, dependant, now, out, seen)

    # ------------------------------------------------------------------ change log

    @staticmethod
    def _event(values: Sequence[Any]) -> ChangeEvent:
        origin, seq, at, collection, kind, old, new, extra = values
        return ChangeEvent(
            origin=origin,
            seq=seq,
            at=at,
            collection=collection,
            type=kind,
            old=None if old is None else json.loads(old),
            new=None if new is None else json.loads(new),
            extra=json.loads(extra) if extra else {},
        )

    _EVENT_COLUMNS = "origin, seq, at, collection, type, old, new, extra"

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` after ``seq``, oldest first."""

        def read(conn: sqlite3.Connection) -> list[ChangeEvent]:
            rows = conn.execute(
                f"SELECT {self._EVENT_COLUMNS} FROM cluster_events"
                " WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?",
                (origin, seq, limit),
            )
            return [self._event(r) for r in rows]

        return await self._run(read)

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""

        def read(conn: sqlite3.Connection) -> list[ChangeEvent]:
            rows = conn.execute(
                f"SELECT {self._EVENT_COLUMNS} FROM cluster_events"
                " WHERE at >= ? ORDER BY at, origin, seq LIMIT ?",
                (at, limit),
            )
            return [self._event(r) for r in rows]

        return await self._run(read)

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; sequence numbers live on in cluster_event_seqs."""

        def prune(conn: sqlite3.Connection) -> int:
            def body() -> int:
                cur = conn.execute("DELETE FROM cluster_events WHERE at < ?", (before,))
                return max(cur.rowcount, 0)

            return self._write(conn, body)

        return await self._run(prune)

    # ------------------------------------------------------------------ counters

    def _counter_params(self, table: Table, keys: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        codec = self._codecs[table.name]
        out: list[list[Any]] = []
        for key in keys:
            check_columns(table, key)
            if "value" in key:
                raise ValueError(f"{table.name}: a counter key cannot hold the value column")
            if any(key.get(c) is None for c in table.primary_key):
                raise ValueError(
                    f"{table.name}: a counter key needs the primary key {table.primary_key}"
                )
            out.append([codec.encode(c, key[c]) for c in table.primary_key])
        return out

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE SET value = value + ?`` for each key.

        One statement per key is atomic in sqlite (the write lock is held for the
        whole transaction), so nodes sharing the file never lose an increment.
        """
        t, _ = self._table(table)
        params = self._counter_params(t, keys)
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

            self._write(conn, body)

        await self._run(txn)

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value (0 for a missing row), read in one snapshot."""
        t, _ = self._table(table)
        params = self._counter_params(t, keys)
        where = " AND ".join(f"{_q(c)} = ?" for c in t.primary_key)
        sql = f"SELECT {_q('value')} FROM {_q(t.name)} WHERE {where}"

        def read(conn: sqlite3.Connection) -> list[int]:
            out: list[int] = []
            for p in params:
                found = conn.execute(sql, p).fetchone()
                out.append(int(found[0] or 0) if found is not None else 0)
            return out

        return await self._run(read)
