# -*- test-case-name: tests.store.test_cassandra_specific -*-
"""CassandraStore: the IStore contract on Cassandra (reads before writes, logged batches).

The driver plumbing is in :mod:`.session`, CQL text and values in :mod:`.cql`, reads of
live rows, the read-before-write checks and cascades in :mod:`.reads`, counter rows in
:mod:`.counters`, the change log and its batches in :mod:`.events` and migrations in
:mod:`.migrations`;
the package docstring says how Kong 0.9's contract is kept without constraints or
transactions.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.cassandra import migrations as steps
from kongtx.store.cassandra.counters import CounterRows
from kongtx.store.cassandra.cql import (
    alive,
    decode_token,
    encode_token,
    insert_statement,
    load,
    matches,
    param,
    qualified,
    replication,
    roundtrip,
    select_list,
    where,
)
from kongtx.store.cassandra.events import EventLog
from kongtx.store.cassandra.reads import RowReads
from kongtx.store.cassandra.session import CassandraSession
from kongtx.store.common import children_of, counter_keys
from kongtx.store.common import quote as _q
from kongtx.store.interface import (
    ChangeEvent,
    InvalidOffset,
    IStore,
    Page,
    Row,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.rules import check_columns, check_tables, check_ttl, sort_key
from kongtx.store.tables import TABLES


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
        ssl_ca: str | None = None,
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
        """``timeout`` is in milliseconds, like ``cassandra_timeout`` (connect and read);
        ``ssl_ca``: the CA file ``ssl_verify`` trusts (``lua_ssl_trusted_certificate``)."""
        from cassandra import ConsistencyLevel

        check_tables(tables)
        self.tables = dict(tables)
        self.origin = origin
        self.clock = clock
        if isinstance(contact_points, str):
            contact_points = [p.strip() for p in contact_points.split(",") if p.strip()]
        if not re.fullmatch(r"[A-Za-z0-9_]{1,48}", keyspace):
            raise ValueError(f"invalid cassandra_keyspace {keyspace!r}")
        self.keyspace = keyspace
        self.timeout = float(timeout) / 1000.0
        self.migration_timeout = max(float(migration_timeout), self.timeout)
        self._replication = replication(repl_strategy, repl_factor, data_centers)
        self._driver = CassandraSession(
            contact_points=list(contact_points),
            port=int(port),
            keyspace=keyspace,
            consistency=ConsistencyLevel.name_to_value[consistency.upper()],
            timeout=self.timeout,
            ssl=ssl,
            ssl_verify=ssl_verify,
            ssl_ca=ssl_ca,
            username=username,
            password=password,
            protocol_version=protocol_version,
            clock=clock,
            reactor=reactor,
        )
        self._events = EventLog(self._driver, origin)
        self._counters = CounterRows(self._driver)
        self._reads = RowReads(self._driver, self.tables, children_of(self.tables), clock)

    def _ks(self, table: str) -> str:
        return qualified(self.keyspace, table)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (in the thread pool: the driver's connect blocks)."""
        await self._driver.start()

    async def stop(self) -> None:
        """Shut the driver down (its I/O thread and connections)."""
        self._events.forget()
        await self._driver.stop()

    async def ping(self) -> None:
        """A cheap read of ``system.local``; StoreUnavailable when the server is gone."""
        await self._driver.rows("SELECT release_version FROM system.local")

    # ------------------------------------------------------------------ migrations

    async def migrate(self, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Create the keyspace, then run pending migrations under an LWT lock."""
        await steps.ensure_keyspace(self._driver, self._replication, self.migration_timeout)
        owner = f"{self.origin}:{uuid.uuid4()}"
        await steps.lock(self._driver, owner, self.migration_timeout)
        try:
            return await steps.run_migrations(self._driver, migrations, self.migration_timeout)
        finally:
            await steps.unlock(self._driver, owner)

    async def executed_migrations(self) -> dict[str, list[str]]:
        """Identifier -> names already run (``{}`` when the keyspace is empty)."""
        return await steps.recorded(self._driver)

    async def reset(self) -> None:
        """Drop the keyspace (every table this store created)."""
        await self._driver.execute(
            f"DROP KEYSPACE IF EXISTS {_q(self.keyspace)}", limit=self.migration_timeout
        )
        self._events.forget()

    def _insert(self, table: Table, row: Row, expire_at: int | None) -> tuple[str, list[Any]]:
        return insert_statement(self.keyspace, table, row, expire_at, self.clock.millis())

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
        full = load(tb, [roundtrip(tb, c, full[c]) for c in tb.column_names])
        pk = {c: full[c] for c in tb.primary_key}
        if await self._reads.select_rows(tb, pk):
            raise UniqueViolation(", ".join(tb.primary_key), ", ".join(str(v) for v in pk.values()))
        await self._reads.check_constraints(tb, full, None)
        expire_at = self.clock.millis() + int(ttl * 1000) if ttl is not None else None
        await self._events.batch(
            [self._insert(tb, full, expire_at)], [(table, "create", None, full)]
        )
        return full

    async def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row named by its primary key or one unique column (an indexed read)."""
        return await self._reads.find(self.tables[table], key)

    async def select(self, table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every row matching ``filters`` (ALLOW FILTERING), sorted like the other stores."""
        tb = self.tables[table]
        check_columns(tb, filters)
        rows = await self._reads.select_rows(tb, filters)
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
        cond, params, local, empty = where(tb, filters)
        query = f"{table}{cond}{params!r}{sorted(local.items(), key=repr)!r}"
        state = decode_token(offset, query) if offset is not None else None
        total = await self.count(table, filters)
        if empty:
            return Page(rows=[], total=0, offset=None)
        cql = f"SELECT {select_list(tb)} FROM {self._ks(table)}{cond}"
        rows: list[Row] = []
        try:
            while len(rows) < size:
                batch, state = await self._driver.execute(
                    cql, params, fetch_size=size - len(rows), paging_state=state
                )
                now = self.clock.millis()
                loaded = (load(tb, v) for v in batch if alive(tb, v, now))
                rows += [r for r in loaded if matches(r, local)]
                if not state:
                    break
            if state:
                # the server may say "more" when nothing is left: peek, keep the state
                more, after = await self._driver.execute(
                    cql, params, fetch_size=1, paging_state=state
                )
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
        cond, params, local, empty = where(tb, filters)
        if empty:
            return 0
        if local or tb.ttl:
            return len(await self._reads.select_rows(tb, filters))
        rows = await self._driver.rows(f"SELECT COUNT(*) FROM {self._ks(table)}{cond}", params)
        return int(rows[0][0])

    async def update(
        self, table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Read, check, then rewrite the whole row (keeping or restarting its TTL) + event."""
        tb = self.tables[table]
        check_columns(tb, values)
        check_ttl(tb, ttl)
        found = await self._reads.find_live(tb, key)
        if found is None:
            return None
        old, expire_at = found
        for c in tb.primary_key:
            if c in values and values[c] != old[c]:
                raise ValueError(f"{table}: the primary key of a row cannot change")
        merged = {**old, **values}
        new = load(tb, [roundtrip(tb, c, merged.get(c)) for c in tb.column_names])
        own = tuple(old[c] for c in tb.primary_key)
        changed = {c: new[c] for c in tb.column_names if new[c] != old[c]}
        await self._reads.check_constraints(tb, changed, own)
        if ttl is not None:
            expire_at = self.clock.millis() + int(ttl * 1000)
        await self._events.batch([self._insert(tb, new, expire_at)], [(table, "update", old, new)])
        return new

    async def delete(self, table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the row and, row by row, everything that references it, in one batch."""
        tb = self.tables[table]
        row = await self._reads.find(tb, key)
        if row is None:
            return []
        doomed = await self._reads.collect(tb, row)
        writes: list[tuple[str, list[Any]]] = []
        for dt, drow in doomed:
            cond = " AND ".join(f"{_q(c)} = %s" for c in dt.primary_key)
            writes.append(
                (
                    f"DELETE FROM {self._ks(dt.name)} WHERE {cond}",
                    [param(dt, c, drow[c]) for c in dt.primary_key],
                )
            )
        await self._events.batch(writes, [(dt.name, "delete", drow, None) for dt, drow in doomed])
        return [(dt.name, drow) for dt, drow in doomed]

    # ------------------------------------------------------------------ change log

    async def events_after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """A slice of ``origin``'s partition after ``seq``."""
        return await self._events.after(origin, seq, limit)

    async def events_since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Every origin's events at or after ``at`` (a filtered scan), by (at, origin, seq)."""
        return await self._events.since(at, limit)

    async def prune_events(self, before: int) -> int:
        """Delete events stamped before ``before``; the per-origin sequences go on."""
        return await self._events.prune(before)

    # ------------------------------------------------------------------ counters

    async def increment_counters(
        self, table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """Add ``amount`` to each counter: a compare-and-set loop (LWT) per key (.counters)."""
        tb = self.tables[table]
        params = counter_keys(tb, keys, lambda c, v: param(tb, c, v))
        await self._counters.increment(tb, params, amount)

    async def read_counters(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """Each named counter's value, 0 for a missing row."""
        tb = self.tables[table]
        params = counter_keys(tb, keys, lambda c, v: param(tb, c, v))
        return await self._counters.read(tb, params)
