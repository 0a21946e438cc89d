# -*- test-case-name: tests.store.test_cassandra_specific -*-
"""The Cassandra store, on cassandra-driver 3.30 with its own I/O thread.

Why not the driver's ``TwistedConnection``: it is deprecated since 3.30 (removal planned
for 3.31), it imports and may even *run* the global reactor itself, and it cannot be
given our injected one.  Instead the driver keeps its default event loop (libev when
available, which the manylinux wheels bundle, else asyncore/asyncio) in its own thread,
and every ``ResponseFuture`` hands its outcome to our reactor with
``reactor.callFromThread``.  The few blocking driver calls (connect, set_keyspace,
shutdown) run in the reactor's thread pool.  Each request also has a timeout on the
injected :class:`~kongtx.clock.Clock`, so a hung server gives :class:`StoreUnavailable`
on time whatever the driver does.

Cassandra has no constraints and no transactions, so, as Kong 0.9 did (SPEC §7.2):

* uniqueness and foreign keys are checked by reading before writing (secondary indexes
  on every unique and foreign-key column).  Two nodes writing the same value at the
  same instant can both pass the check: this race is documented, not hidden;
* a deletion cascades row by row (read the dependants through their indexes);
* each change and its ``cluster_events`` rows go in one *logged batch*, so they are
  applied together or not at all;
* TTLs are native (``USING TTL``), one second longer than asked because Cassandra
  counts them in whole seconds from a truncated "now" (a TTL of 1 can otherwise end
  at once); the exact expiry is kept in a hidden ``kongtx_expire_at`` column and reads
  hide the row from that instant on the injected clock.  An update of a TTL row
  rewrites the whole row with the time it has left (or the new TTL), so no column
  outlives the others.  ``COUNT`` on a TTL table is done on the live rows;
* listings are in token order, paged with the driver's ``paging_state`` carried in the
  opaque offset token; ``total`` is a ``COUNT(*)`` with the same filters; filters use
  ``ALLOW FILTERING``;
* ``cluster_events`` is partitioned by origin and clustered by seq; the next seq of
  this node's origin is kept in memory (seeded from ``cluster_events_seq`` on first
  use), which assumes one running store per origin, as node names guarantee; this
  store's write batches run one at a time so seqs become visible in order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import ssl as _ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.interface import (
    ChangeEvent,
    ChangeType,
    ForeignKeyViolation,
    InvalidOffset,
    IStore,
    Page,
    Row,
    StoreError,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.tables import (
    TABLES,
    check_columns,
    check_key,
    check_tables,
    check_ttl,
    matches_filter,
    sort_key,
)

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1)
_TOKEN_PREFIX = b"c1:"
#: Not a secret (the Admin API is trusted): it only makes stray tokens fail the MAC.
_TOKEN_KEY = b"kongtx cassandra paging state"
#: Hidden column of TTL tables: when the row expires (epoch ms on the writer's clock).
EXPIRE_COLUMN = "kongtx_expire_at"
_LOCK_TABLE = "kongtx_locks"
_UNKNOWN = object()
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def split_cql(script: str) -> list[str]:
    """The statements of a ``.cql`` file (``--`` comments dropped; ``;`` ends a statement)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    text = "\n".join(lines)
    return [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]


def parse_data_centers(value: Any) -> dict[str, int]:
    """``dc1:2,dc2:3`` (or a list of ``dc:rf``) -> ``{"dc1": 2, "dc2": 3}``."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    result: dict[str, int] = {}
    for item in items:
        name, _, rf = str(item).strip().partition(":")
        if not name or not rf.strip().isdigit():
            raise ValueError(f"cassandra_data_centers: invalid entry {item!r} (want <dc>:<rf>)")
        result[name.strip()] = int(rf)
    return result


def replication(strategy: str, factor: int, data_centers: Any) -> str:
    """The ``WITH replication = {...}`` map of the keyspace, per SPEC §5.2/§7.2."""
    if strategy == "SimpleStrategy":
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(factor)}}}"
    if strategy == "NetworkTopologyStrategy":
        dcs = ", ".join(f"'{dc}': {rf}" for dc, rf in parse_data_centers(data_centers).items())
        return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
    raise ValueError(f"unknown cassandra_repl_strategy {strategy!r}")


def _token_mac(paging_state: bytes, query: str) -> bytes:
    return hmac.new(_TOKEN_KEY, query.encode() + b"\0" + paging_state, hashlib.sha256).digest()[:8]


def encode_token(paging_state: bytes, query: str = "") -> str:
    """The opaque offset token carrying the driver's paging state for ``query``.

    A short MAC binds the state to the listing it came from.  Why: Cassandra answers a
    malformed paging state with a *protocol* error, on which the driver drops the
    connection and marks the host down, so a mistyped ``offset`` must never reach it.
    """
    raw = _TOKEN_PREFIX + _token_mac(paging_state, query) + paging_state
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, query: str = "") -> bytes:
    """The paging state inside an :func:`encode_token` token; ``InvalidOffset`` otherwise."""
    if not isinstance(token, str) or not token:
        raise InvalidOffset(f"invalid offset {token!r}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise InvalidOffset(f"invalid offset {token!r}") from e
    head = len(_TOKEN_PREFIX) + 8
    if not raw.startswith(_TOKEN_PREFIX) or len(raw) <= head:
        raise InvalidOffset(f"invalid offset {token!r}")
    state = raw[head:]
    if not hmac.compare_digest(raw[len(_TOKEN_PREFIX) : head], _token_mac(state, query)):
        raise InvalidOffset(f"invalid offset {token!r}")
    return state


class _Unavailable(Exception):
    """Marks driver errors that mean "server gone or too slow"."""


def _driver_unavailable(error: BaseException) -> bool:
    from cassandra import (
        OperationTimedOut,
        ReadFailure,
        ReadTimeout,
        Unavailable,
        WriteFailure,
        WriteTimeout,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return isinstance(
        error,
        NoHostAvailable
        | OperationTimedOut
        | Unavailable
        | ReadTimeout
        | WriteTimeout
        | ReadFailure
        | WriteFailure
        | ConnectionException
        | OSError,
    )


#: The longest wait (s) between the driver's attempts to reach a down host.
RECONNECT_MAX_DELAY = 10.0


@implementer(IStore)
class CassandraStore:
    """An :class:`IStore` on Apache Cassandra (tested on 5.0, protocol v5)."""

    name = "cassandra"
    log = logger()

    def __init__(
        self,
        *,
        contact_points: Sequence[str] | str = ("127.0.0.1",),
        port: int = 9042,
        keyspace: str = "kong",
        consistency: str = "ONE",
        timeout: int = 5000,
        ssl: bool = False,
        ssl_verify: bool = False,
        username: str | None = None,
        password: str | None = None,
        repl_strategy: str = "SimpleStrategy",
        repl_factor: int = 1,
        data_centers: Any = "dc1:2,dc2:3",
        tables: Mapping[str, Table] = TABLES,
        origin: str,
        clock: Clock,
        reactor: Any,
        protocol_version: int = 5,
        migration_timeout: float = 120.0,
    ) -> None:
        """``timeout`` is in milliseconds, like ``cassandra_timeout`` (connect and read)."""
        from cassandra import ConsistencyLevel

        check_tables(tables)
        self.tables = dict(tables)
        self.origin = origin
        self.clock = clock
        self._reactor = reactor
        if isinstance(contact_points, str):
            contact_points = [p.strip() for p in contact_points.split(",") if p.strip()]
        self._contact_points = list(contact_points)
        self._port = int(port)
        if not re.fullmatch(r"[A-Za-z0-9_]{1,48}", keyspace):
            raise ValueError(f"invalid cassandra_keyspace {keyspace!r}")
        self.keyspace = keyspace
        self._consistency = ConsistencyLevel.name_to_value[consistency.upper()]
        self.timeout = float(timeout) / 1000.0
        self.migration_timeout = max(float(migration_timeout), self.timeout)
        self._ssl = ssl
        self._ssl_verify = ssl_verify
        self._username = username
        self._password = password
        self._replication = replication(repl_strategy, repl_factor, data_centers)
        self._protocol_version = protocol_version
        self._cluster: Any = None
        self._session: Any = None
        self._seq: int | None = None
        self._seq_lock = DeferredLock()
        self._counter_locks: dict[tuple[str, str], DeferredLock] = {}
        self._children: dict[str, list[tuple[Table, Any]]] = {}
        for child in self.tables.values():
            for fk in child.foreign_keys:
                self._children.setdefault(fk.table, []).append((child, fk))

    # ------------------------------------------------------------------ driver plumbing

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a blocking driver call in the reactor's thread pool."""
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def _ks(self, table: str) -> str:
        return f"{_q(self.keyspace)}.{_q(table)}"

    async def _execute(
        self,
        cql: str,
        params: Sequence[Any] | None = None,
        *,
        fetch_size: int | None = None,
        paging_state: bytes | None = None,
        limit: float | None = None,
    ) -> tuple[list[tuple[Any, ...]], bytes | None]:
        """One request; returns (rows of this page, paging state of the next or None)."""
        from cassandra.query import SimpleStatement

        if self._session is None:
            raise StoreUnavailable("the Cassandra store is not started")
        timeout = limit or self.timeout
        statement = SimpleStatement(cql, consistency_level=self._consistency, fetch_size=fetch_size)
        result: Deferred[tuple[list[tuple[Any, ...]], bytes | None]] = Deferred()

        def ok(_rows: Any, future: Any) -> None:
            try:
                rs = future.result()
                outcome: Any = (list(rs.current_rows), rs.paging_state)
            except BaseException as e:
                outcome = Failure(e)
            self._reactor.callFromThread(deliver, outcome)

        def failed(error: BaseException) -> None:
            self._reactor.callFromThread(deliver, Failure(error))

        def deliver(outcome: Any) -> None:
            if call.active():
                call.cancel()
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def expired() -> None:
            if not result.called:
                result.errback(
                    Failure(StoreUnavailable(f"Cassandra did not answer within {timeout:g}s"))
                )

        call = self.clock.call_later(timeout + 0.5, expired)
        try:
            future = self._session.execute_async(
                statement, params, timeout=timeout, paging_state=paging_state
            )
            future.add_callbacks(ok, failed, callback_args=(future,))
        except BaseException as e:
            deliver(Failure(e))
        try:
            return await result
        except StoreError:
            raise
        except Exception as e:
            if _driver_unavailable(e):
                raise StoreUnavailable(f"Cassandra unavailable: {e}") from e
            raise

    async def _rows(self, cql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        rows, _ = await self._execute(cql, params)
        return rows

    # ------------------------------------------------------------------ values

    @staticmethod
    def _param(table: Table, col: str, value: Any) -> Any:
        if value is None:
            return None
        kind = table.column(col).type
        if kind == "uuid":
            return uuid.UUID(str(value))
        if kind == "timestamp":
            return _EPOCH + timedelta(milliseconds=value)
        if kind == "json":
            return json.dumps(value)
        return value

    @staticmethod
    def _load(table: Table, values: Sequence[Any]) -> Row:
        row: Row = {}
        for col, value in zip(table.column_names, values, strict=False):
            kind = table.column(col).type
            if value is not None:
                if kind == "uuid":
                    value = str(value)
                elif kind == "timestamp":
                    value = (value - _EPOCH) // timedelta(milliseconds=1)
                elif kind == "json":
                    value = json.loads(value)
            row[col] = value
        return row

    def _select_list(self, table: Table) -> str:
        cols = [*table.column_names, *([EXPIRE_COLUMN] if table.ttl else [])]
        return ", ".join(_q(c) for c in cols)

    def _alive(self, table: Table, values: Sequence[Any]) -> bool:
        """Whether a fetched row is still alive (see :data:`EXPIRE_COLUMN`)."""
        if not table.ttl:
            return True
        expire_at = values[len(table.columns)]
        return expire_at is None or expire_at > self.clock.millis()

    async def _select_live(
        self, table: Table, filters: Mapping[str, Any]
    ) -> list[tuple[Row, int | None]]:
        """Live rows matching ``filters``, each with its expiry (ms) or None."""
        where, params, local, empty = self._where(table, filters)
        if empty:
            return []
        rows = await self._rows(
            f"SELECT {self._select_list(table)} FROM {self._ks(table.name)}{where}", params
        )
        out: list[tuple[Row, int | None]] = []
        n = len(table.columns)
        for values in rows:
            if not self._alive(table, values):
                continue
            row = self._load(table, values)
            if self._matches(row, local):
                out.append((row, values[n] if table.ttl else None))
        return out

    def _where(
        self, table: Table, filters: Mapping[str, Any]
    ) -> tuple[str, list[Any], dict[str, Any], bool]:
        """(CQL WHERE, params, filters left for Python, whether nothing can match)."""
        parts: list[str] = []
        params: list[Any] = []
        local: dict[str, Any] = {}
        for col, value in filters.items():
            kind = table.column(col).type
            if value is None or kind == "json":
                # CQL cannot match NULL; json text is compared parsed; tags (a TagFilter)
                # are tested in Python too: there is no index on a JSON text column.
                local[col] = value
                continue
            if kind == "uuid" and not _is_uuid(value):
                return "", [], {}, True
            parts.append(f"{_q(col)} = %s")
            params.append(self._param(table, col, value))
        where = (" WHERE " + " AND ".join(parts) + " ALLOW FILTERING") if parts else ""
        return where, params, local, False

    @staticmethod
    def _matches(row: Row, local: Mapping[str, Any]) -> bool:
        return all(matches_filter(row.get(c), v) for c, v in local.items())

    async def _select_rows(self, table: Table, filters: Mapping[str, Any]) -> list[Row]:
        return [row for row, _ in await self._select_live(table, filters)]

    async def _find_live(
        self, table: Table, key: Mapping[str, Any]
    ) -> tuple[Row, int | None] | None:
        check_key(table, key)
        if all(key.get(c) is not None for c in table.primary_key):
            lookup = {c: key[c] for c in table.primary_key}
        else:
            col = next(c for c in table.unique if key.get(c) is not None)
            lookup = {col: key[col]}
        for row, expire_at in await self._select_live(table, lookup):
            if all(row.get(c) == v for c, v in key.items()):
                return row, expire_at
        return None

    async def _find(self, table: Table, key: Mapping[str, Any]) -> Row | None:
        found = await self._find_live(table, key)
        return found[0] if found else None

    # ------------------------------------------------------------------ lifecycle

    def _connect_blocking(self) -> tuple[Any, Any]:
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            TokenAwarePolicy,
        )

        kwargs: dict[str, Any] = {
            "contact_points": self._contact_points,
            "port": self._port,
            "protocol_version": self._protocol_version,
            "connect_timeout": self.timeout,
            "control_connection_timeout": self.timeout,
            # The driver's default backs off up to 600 s between attempts to reach a
            # down host, so after a long outage the node could stay unavailable for
            # minutes once the server is back; capped, it reconnects within seconds.
            # It also gives up after 64 attempts: never, here (the node cannot restart
            # its own driver, and an operator expects it to come back by itself).
            "reconnection_policy": ExponentialReconnectionPolicy(
                base_delay=1.0, max_delay=RECONNECT_MAX_DELAY, max_attempts=None
            ),
            "execution_profiles": {
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                    request_timeout=self.timeout,
                    consistency_level=self._consistency,
                )
            },
        }
        if self._username and self._password:
            kwargs["auth_provider"] = PlainTextAuthProvider(self._username, self._password)
        if self._ssl:
            context = _ssl.create_default_context()
            if not self._ssl_verify:
                context.check_hostname = False
                context.verify_mode = _ssl.CERT_NONE
            kwargs["ssl_context"] = context
        cluster = Cluster(**kwargs)
        try:
            session = cluster.connect()
        except BaseException:
            cluster.shutdown()
            raise
        if self.keyspace in cluster.metadata.keyspaces:
            session.set_keyspace(self.keyspace)
        return cluster, session

    async def start(self) -> None:
        """Connect (in the thread pool: the driver's connect blocks)."""
        if self._session is not None:
            return
        try:
            self._cluster, self._session = await self._in_thread(self._connect_blocking)
        except Exception as e:
            raise StoreUnavailable(f"cannot connect to Cassandra: {e}") from e

    async def stop(self) -> None:
        """Shut the driver down (its I/O thread and connections)."""
        cluster, self._cluster, self._session = self._cluster, None, None
        self._seq = None
        if cluster is not None:
            await self._in_thread(cluster.shutdown)

    async def ping(self) -> None:
        """A cheap read of ``system.local``; StoreUnavailable when the server is gone."""
        await self._rows("SELECT release_version FROM system.local")

    # ------------------------------------------------------------------ migrations

    async def _ensure_keyspace(self) -> None:
        await self._execute(
            f"CREATE KEYSPACE IF NOT EXISTS {_q(self.keyspace)} WITH replication = {self._replication}",
            limit=self.migration_timeout,
        )
        await self._execute(
            f"CREATE TABLE IF NOT EXISTS {self._ks(_LOCK_TABLE)} (key text PRIMARY KEY, owner text)",
            limit=self.migration_timeout,
        )
        await self._in_thread(self._session.set_keyspace, self.keyspace)

    async def _lock(self, owner: str) -> None:
        """Take the migration lock (a lightweight transaction row with a TTL)."""
        deadline = self.clock.seconds() + self.migration_timeout
        while True:
            rows = await self._rows(
                f"INSERT INTO {self._ks(_LOCK_TABLE)} (key, owner) VALUES ('migrations', %s)"
                " IF NOT EXISTS USING TTL 120",
                [owner],
            )
            if rows and rows[0][0]:
                return
            if self.clock.seconds() > deadline:
                raise StoreUnavailable("timed out waiting for the Cassandra migration lock")
            await self.clock.sleep(0.5)

    async def _unlock(self, owner: str) -> None:
        await self._rows(
            f"DELETE FROM {self._ks(_LOCK_TABLE)} WHERE key = 'migrations' IF owner = %s", [owner]
        )

    async def _recorded(self) -> dict[str, list[str]]:
        exists = await self._rows(
            "SELECT table_name FROM system_schema.tables"
            " WHERE keyspace_name = %s AND table_name = 'schema_migrations'",
            [self.keyspace],
        )
        if not exists:
            return {}
        rows = await self._rows(f"SELECT id, migrations FROM {self._ks('schema_migrations')}")
        found = {k: list(v) for k, v in rows if v}
        return {k: found[k] for k in sorted(found, key=lambda i: (i != "core", i))}

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Create the keyspace, then run pending migrations under an LWT lock."""
        await self._ensure_keyspace()
        owner = f"{self.origin}:{uuid.uuid4()}"
        await self._lock(owner)
        ran: list[str] = []
        try:
            await self._execute(
                f"CREATE TABLE IF NOT EXISTS {self._ks('schema_migrations')}"
                " (id text PRIMARY KEY, migrations list<text>)",
                limit=self.migration_timeout,
            )
            rows = await self._rows(f"SELECT id, migrations FROM {self._ks('schema_migrations')}")
            done = {k: list(v or []) for k, v in rows}
            for identifier, entries in migrations.items():
                recorded = done.setdefault(identifier, [])
                for name, script in entries:
                    if name in recorded:
                        continue
                    for statement in split_cql(script):
                        try:
                            await self._execute(statement, limit=self.migration_timeout)
                        except StoreUnavailable:
                            raise
                        except Exception as e:
                            if "already exist" in str(
                                e
                            ) or "conflicts with an existing column" in str(e):
                                continue  # a re-run after a partial failure
                            raise StoreError(
                                f"[cassandra error] Error during migration {name}: {e}"
                            ) from e
                    await self._rows(
                        f"UPDATE {self._ks('schema_migrations')} SET migrations = migrations + %s"
                        " WHERE id = %s",
                        [[name], identifier],
                    )
                    recorded.append(name)
                    ran.append(f"{identifier}: {name}")
        finally:
            await self._unlock(owner)
        return ran

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run (``{}`` when the keyspace is empty)."""
        return await self._recorded()

    async def reset(self) -> None:
        """Drop the keyspace (every table this store created)."""
        await self._execute(
            f"DROP KEYSPACE IF EXISTS {_q(self.keyspace)}", limit=self.migration_timeout
        )
        self._seq = None

    # ------------------------------------------------------------------ events

    async def _last_seq(self) -> int:
        """The last seq this origin used (seeded once from the database)."""
        if self._seq is None:
            rows = await self._rows(
                f"SELECT seq FROM {self._ks('cluster_events_seq')} WHERE origin = %s",
                [self.origin],
            )
            last = await self._rows(
                f"SELECT seq FROM {self._ks('cluster_events')} WHERE origin = %s"
                " ORDER BY seq DESC LIMIT 1",
                [self.origin],
            )
            self._seq = max(
                int(rows[0][0]) if rows and rows[0][0] is not None else 0,
                int(last[0][0]) if last else 0,
            )
        return self._seq

    def _event_statements(
        self, changes: Sequence[tuple[str, ChangeType, Row | None, Row | None]], seqs: list[int]
    ) -> list[tuple[str, list[Any]]]:
        at = self.clock.millis()
        out: list[tuple[str, list[Any]]] = []
        for (collection, kind, old, new), seq in zip(changes, seqs, strict=True):
            out.append(
                (
                    f"INSERT INTO {self._ks('cluster_events')}"
                    " (origin, seq, at, collection, type, old, new, extra)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        self.origin,
                        seq,
                        at,
                        collection,
                        kind,
                        None if old is None else json.dumps(old),
                        None if new is None else json.dumps(new),
                        "{}",
                    ],
                )
            )
        if seqs:
            out.append(
                (
                    f"UPDATE {self._ks('cluster_events_seq')} SET seq = %s WHERE origin = %s",
                    [seqs[-1], self.origin],
                )
            )
        return out

    async def _batch(
        self,
        writes: list[tuple[str, list[Any]]],
        changes: Sequence[tuple[str, ChangeType, Row | None, Row | None]],
    ) -> None:
        """Apply ``writes`` and the events of ``changes`` in one logged batch.

        Batches of this store run one at a time: a reader that saw seq N must never
        see N-1 appear later (it would skip it), which concurrent batches could cause.
        A batch refused by the server gives its numbers back; one whose outcome is
        unknown (timeout) keeps them, which may leave a gap that readers step over.
        """
        from cassandra.encoder import Encoder

        async with self._seq_lock:
            last = await self._last_seq()
            seqs = list(range(last + 1, last + 1 + len(changes)))
            self._seq = last + len(changes)
            statements = writes + self._event_statements(changes, seqs)
            encoder = Encoder()
            body = []
            for cql, params in statements:
                body.append(cql % tuple(encoder.cql_encode_all_types(p) for p in params))
            try:
                await self._execute("BEGIN BATCH\n" + ";\n".join(body) + ";\nAPPLY BATCH")
            except StoreUnavailable:
                raise
            except BaseException:
                self._seq = last
                raise

    def _insert_statement(
        self, table: Table, row: Row, expire_at: int | None
    ) -> tuple[str, list[Any]]:
        """INSERT of the whole row; a TTL row carries its expiry and a native TTL.

        Cassandra counts TTLs in whole seconds from a truncated "now", so a cell can die
        up to a second early; the native TTL is therefore one second longer than asked
        and reads hide the row at its exact ``expire_at`` on the injected clock.
        """
        cols = list(table.column_names)
        params = [self._param(table, c, row.get(c)) for c in cols]
        using = ""
        if table.ttl:
            cols.append(EXPIRE_COLUMN)
            params.append(expire_at)
            if expire_at is not None:
                left = max(0, expire_at - self.clock.millis())
                using = f" USING TTL {-(-left // 1000) + 1}"
        return (
            f"INSERT INTO {self._ks(table.name)} ({', '.join(_q(c) for c in cols)})"
            f" VALUES ({', '.join(['%s'] * len(cols))}){using}",
            params,
        )

    # ------------------------------------------------------------------ checks

    async def _check_constraints(self, table: Table, row: Row, own: tuple[Any, ...] | None) -> None:
        """Read-before-write uniqueness then foreign keys (race-prone; see the module doc)."""
        for col in table.unique:
            value = row.get(col)
            if value is None:
                continue
            for other in await self._select_rows(table, {col: value}):
                if tuple(other[c] for c in table.primary_key) != own:
                    raise UniqueViolation(col, value)
        for fk in table.foreign_keys:
            value = row.get(fk.column)
            if value is None:
                continue
            target = self.tables[fk.table]
            if not await self._select_rows(target, {fk.target: value}):
                raise ForeignKeyViolation(fk.column, value)

    # ------------------------------------------------------------------ rows

    async def insert(self, table: str, row: Row, ttl: int | None = None) -> Row:
        """Check, then INSERT (``USING TTL``) with its ``create`` event in one batch."""
        tb = self.tables[table]
        check_columns(tb, row)
        check_ttl(tb, ttl)
        full: Row = {c: row.get(c) for c in tb.column_names}
        for c in tb.primary_key:
            if full[c] is None:
                raise ValueError(f"{table}: primary key column {c!r} is NULL")
        full = self._load(tb, [self._roundtrip(tb, c, full[c]) for c in tb.column_names])
        pk = {c: full[c] for c in tb.primary_key}
        if await self._select_rows(tb, pk):
            raise UniqueViolation(", ".join(tb.primary_key), ", ".join(str(v) for v in pk.values()))
        await self._check_constraints(tb, full, None)
        expire_at = self.clock.millis() + int(ttl * 1000) if ttl is not None else None
        await self._batch(
            [self._insert_statement(tb, full, expire_at)], [(table, "create", None, full)]
        )
        return full

    def _roundtrip(self, table: Table, col: str, value: Any) -> Any:
        """``value`` as the driver would return it (so the returned row equals a re-read)."""
        if value is None:
            return None
        kind = table.column(col).type
        if kind == "json":
            return json.dumps(value)
        if kind == "timestamp":
            return _EPOCH + timedelta(milliseconds=int(value))
        return value

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row named by its primary key or one unique column (an indexed read)."""
        return await self._find(self.tables[table], key)

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every row matching ``filters`` (ALLOW FILTERING), sorted like the other stores."""
        tb = self.tables[table]
        check_columns(tb, filters)
        rows = await self._select_rows(tb, filters)
        rows.sort(key=lambda r: sort_key(tb, r))
        return rows

    async def page(
        self, table: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """Rows in token order; the offset token carries the driver's paging state."""
        tb = self.tables[table]
        check_columns(tb, filters)
        if size < 1:
            raise ValueError(f"page size must be at least 1, not {size!r}")
        where, params, local, empty = self._where(tb, filters)
        query = f"{table}{where}{params!r}{sorted(local.items(), key=repr)!r}"
        state = decode_token(offset, query) if offset is not None else None
        total = await self.count(table, filters)
        if empty:
            return Page(rows=[], total=0, offset=None)
        cql = f"SELECT {self._select_list(tb)} FROM {self._ks(table)}{where}"
        rows: list[Row] = []
        try:
            while len(rows) < size:
                batch, state = await self._execute(
                    cql, params, fetch_size=size - len(rows), paging_state=state
                )
                loaded = (self._load(tb, v) for v in batch if self._alive(tb, v))
                rows += [r for r in loaded if self._matches(r, local)]
                if not state:
                    break
            if state:
                # the server may say "more" when nothing is left: peek, keep the state
                more, after = await self._execute(cql, params, fetch_size=1, paging_state=state)
                if not more and not after:
                    state = None
        except StoreUnavailable:
            raise
        except Exception as e:
            from cassandra import InvalidRequest
            from cassandra.protocol import ProtocolException

            if offset is not None and isinstance(e, InvalidRequest | ProtocolException):
                raise InvalidOffset(f"invalid offset {offset!r}") from e
            raise
        return Page(rows=rows, total=total, offset=encode_token(state, query) if state else None)

    async def count(self, table: str, filters: Mapping[str, Any]) -> int:
        """``SELECT COUNT(*)`` with the same filters (NULL filters are counted in Python)."""
        tb = self.tables[table]
        check_columns(tb, filters)
        where, params, local, empty = self._where(tb, filters)
        if empty:
            return 0
        if local or tb.ttl:
            return len(await self._select_rows(tb, filters))
        rows = await self._rows(f"SELECT COUNT(*) FROM {self._ks(table)}{where}", params)
        return int(rows[0][0])

    async def update(
        self, table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Read, check, then rewrite the whole row (keeping or restarting its TTL) + event."""
        tb = self.tables[table]
        check_columns(tb, values)
        check_ttl(tb, ttl)
        found = await self._find_live(tb, key)
        if found is None:
            return None
        old, expire_at = found
        for c in tb.primary_key:
            if c in values and values[c] != old[c]:
                raise ValueError(f"{table}: the primary key of a row cannot change")
        merged = {**old, **values}
        new = self._load(tb, [self._roundtrip(tb, c, merged.get(c)) for c in tb.column_names])
        own = tuple(old[c] for c in tb.primary_key)
        changed = {c: new[c] for c in tb.column_names if new[c] != old[c]}
        await self._check_constraints(tb, changed, own)
        if ttl is not None:
            expire_at = self.clock.millis() + int(ttl * 1000)
        await self._batch(
            [self._insert_statement(tb, new, expire_at)], [(table, "update", old, new)]
        )
        return new

    async def _collect(
        self, table: Table, row: Row, out: list[tuple[Table, Row]], seen: set[Any]
    ) -> None:
        """Depth-first: the row, then (per referencing table, in listing order) its dependants."""
        mark = (table.name, tuple(row[c] for c in table.primary_key))
        if mark in seen:
            return
        seen.add(mark)
        out.append((table, row))
        for child, fk in self._children.get(table.name, []):
            if row[fk.target] is None:
                continue
            dependants = await self._select_rows(child, {fk.column: row[fk.target]})
            dependants.sort(key=lambda r: sort_key(child, r))
            for dependant in dependants:
                await self._collect(child, dependant, out, seen)

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the row and, row by row, everything that references it, in one batch."""
        tb = self.tables[table]
        row = await self._find(tb, key)
        if row is None:
            return []
        doomed: list[tuple[Table, Row]] = []
        await self._collect(tb, row, doomed, set())
        writes: list[tuple[str, list[Any]]] = []
        for dt, drow in doomed:
            where = " AND ".join(f"{_q(c)} = %s" for c in dt.primary_key)
            writes.append(
                (
                    f"DELETE FROM {self._ks(dt.name)} WHERE {where}",
                    [self._param(dt, c, drow[c]) for c in dt.primary_key],
                )
            )
        await self._batch(writes, [(dt.name, "delete", drow, None) for dt, drow in doomed])
        return [(dt.name, drow) for dt, drow in doomed]

    # ------------------------------------------------------------------ change log

    _EVENT_COLS = "origin, seq, at, collection, type, old, new, extra"

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

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """A slice of ``origin``'s partition after ``seq``."""
        rows = await self._rows(
            f"SELECT {self._EVENT_COLS} FROM {self._ks('cluster_events')}"
            " WHERE origin = %s AND seq > %s ORDER BY seq ASC LIMIT %s",
            [origin, seq, int(limit)],
        )
        return [self._to_event(r) for r in rows]

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Every origin's events at or after ``at`` (a filtered scan), by (at, origin, seq)."""
        rows = await self._rows(
            f"SELECT {self._EVENT_COLS} FROM {self._ks('cluster_events')} WHERE at >= %s ALLOW FILTERING",
            [at],
        )
        events = sorted((self._to_event(r) for r in rows), key=lambda e: (e.at, e.origin, e.seq))
        return events[: int(limit)]

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; the per-origin sequences go on."""
        rows = await self._rows(
            f"SELECT origin, seq FROM {self._ks('cluster_events')} WHERE at < %s ALLOW FILTERING",
            [before],
        )
        for origin, seq in rows:
            await self._rows(
                f"DELETE FROM {self._ks('cluster_events')} WHERE origin = %s AND seq = %s",
                [origin, seq],
            )
        return len(rows)

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

    async def _increment_one(self, table: Table, pk: list[Any], amount: int) -> None:
        """Compare-and-set on the int ``value`` (lightweight transactions) until it applies."""
        cols = ", ".join(_q(c) for c in table.primary_key)
        where = " AND ".join(f"{_q(c)} = %s" for c in table.primary_key)
        current: Any = _UNKNOWN
        for _attempt in range(1000):
            if current is _UNKNOWN:
                rows = await self._rows(
                    f"INSERT INTO {self._ks(table.name)} ({cols}, value)"
                    f" VALUES ({', '.join(['%s'] * len(pk))}, %s) IF NOT EXISTS",
                    [*pk, amount],
                )
            else:
                rows = await self._rows(
                    f"UPDATE {self._ks(table.name)} SET value = %s WHERE {where} IF value = %s",
                    [(current or 0) + amount, *pk, current],
                )
            if rows[0][0]:
                return
            current = getattr(rows[0], "value", None)
        raise StoreUnavailable(f"{table.name}: counter still contended after 1000 attempts")

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """Add ``amount`` to each counter with a compare-and-set loop (LWT) per key.

        Why not Cassandra ``counter`` columns (Kong's choice): a counter table accepts
        no INSERT, so its rows could not go through the store's ordinary row methods.
        A node's own increments of one key are queued so that only nodes, not
        requests, contend in Paxos.
        """
        tb = self.tables[table]
        params = self._counter_params(tb, keys)
        for pk in params:
            mark = (table, repr(pk))
            lock = self._counter_locks.setdefault(mark, DeferredLock())
            try:
                async with lock:
                    await self._increment_one(tb, pk, amount)
            finally:
                if not lock.locked and not lock.waiting:
                    self._counter_locks.pop(mark, None)

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value, 0 for a missing row."""
        tb = self.tables[table]
        params = self._counter_params(tb, keys)
        where = " AND ".join(f"{_q(c)} = %s" for c in tb.primary_key)
        out: list[int] = []
        for pk in params:
            rows = await self._rows(f"SELECT value FROM {self._ks(table)} WHERE {where}", pk)
            out.append(int(rows[0][0] or 0) if rows else 0)
        return out
