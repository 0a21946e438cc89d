"""PostgresStore behaviour beyond the shared contract: locks, timeouts, outages, TTL cleanup.

The contract suite (test_contract.py) already holds PostgresStore to IStore; these tests
cover what only a PostgreSQL server shows: the advisory lock around migrations, answers
within the timeout when the server is gone or stuck, reconnection after a restart, the
``ttls`` table and its cleanup job, and errors parsed from the server's messages.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock as FakeReactorTime
from twisted.internet.testing import MemoryReactorClock

from kongtx.clock import Clock
from kongtx.store.interface import StoreUnavailable, UniqueViolation
from kongtx.store.migrations import load_migrations
from kongtx.store.postgres import MIGRATION_LOCK, PostgresStore
from kongtx.store.tables import IDENTIFIERS, TABLES
from tests.reactor_thread import call, reactor, run
from tests.servers import postgres as pg
from tests.store.helpers import Rows

MIGRATIONS = load_migrations("postgres", IDENTIFIERS)


# --------------------------------------------------------------------------- unit (no server)


class _FakeConn:
    """Stands in for a txpostgres connection: records close()."""

    closed = 0

    def __init__(self) -> None:
        self.close_calls = 0

    def close(self) -> None:
        self.close_calls += 1
        self.closed = 1


def _offline_store(timeout: float = 5.0) -> tuple[PostgresStore, FakeReactorTime]:
    fake = FakeReactorTime()
    store = PostgresStore(
        tables=TABLES,
        origin="node-a",
        clock=Clock(fake),
        reactor=MemoryReactorClock(),
        timeout=timeout,
    )
    return store, fake


def test_timed_fails_with_store_unavailable_and_drops_the_connection() -> None:
    """A statement with no answer fails with StoreUnavailable at the timeout, on the injected clock."""
    store, fake = _offline_store(timeout=2.0)
    conn = _FakeConn()
    store._pool.open.add(conn)
    inner: Deferred[Any] = Deferred()
    outer = store._pool.timed(inner, conn, 2.0)
    fake.advance(1.9)
    assert not outer.called
    fake.advance(0.2)
    failures: list[Any] = []
    outer.addErrback(failures.append)
    assert failures and failures[0].check(StoreUnavailable)
    assert conn.close_calls == 1 and conn not in store._pool.open
    inner.callback("late")  # a late answer is ignored, not an error
    assert store.clock.pending == 0


def test_timed_passes_results_and_cancels_its_timer() -> None:
    """An answer in time is passed through and leaves no timer behind."""
    store, fake = _offline_store()
    inner: Deferred[Any] = Deferred()
    outer = store._pool.timed(inner, _FakeConn(), 5.0)
    inner.callback(42)
    results: list[Any] = []
    outer.addCallback(results.append)
    assert results == [42]
    assert store.clock.pending == 0


def test_dsn_from_settings() -> None:
    """pg_ssl / pg_ssl_verify map to libpq's sslmode; no password means none is sent.

    Verification is ``verify-ca`` against the CA file: the chain, not the name (Kong 0.9).
    """
    clock = Clock(FakeReactorTime())
    plain = PostgresStore(tables=TABLES, origin="n", clock=clock, reactor=None)
    assert plain._pool.dsn["sslmode"] == "disable" and "password" not in plain._pool.dsn
    ssl = PostgresStore(
        tables=TABLES, origin="n", clock=clock, reactor=None, ssl=True, password="p"
    )
    assert ssl._pool.dsn["sslmode"] == "require" and ssl._pool.dsn["password"] == "p"
    verify = PostgresStore(
        tables=TABLES,
        origin="n",
        clock=clock,
        reactor=None,
        ssl=True,
        ssl_verify=True,
        ssl_ca="/etc/kong/ca.pem",
    )
    assert verify._pool.dsn["sslmode"] == "verify-ca"
    assert verify._pool.dsn["sslrootcert"] == "/etc/kong/ca.pem"
    assert "sslrootcert" not in ssl._pool.dsn  # libpq would turn require into verify-ca


# --------------------------------------------------------------------------- against the server


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[pg.PostgresServer]:
    base = pg.server()
    srv = pg.fresh_database(base, "kts_" + uuid.uuid4().hex[:12])
    try:
        yield srv
    finally:
        if base.owned and not base.running:
            base.start()
        pg.drop_database(srv)


def _store(srv: pg.PostgresServer, origin: str = "node-a", **kw: Any) -> PostgresStore:
    real = reactor()
    return PostgresStore(
        **{**srv.store_kwargs(), **kw},
        tables=TABLES,
        origin=origin,
        clock=Clock(real),
        reactor=real,
    )


@pytest.fixture
def store(server: pg.PostgresServer) -> Iterator[PostgresStore]:
    s = _store(server)
    run(s.start())
    run(s.migrate(MIGRATIONS))
    try:
        yield s
    finally:
        run(s.stop())


def test_connections_use_the_injected_reactor(store: PostgresStore) -> None:
    """Pooled txpostgres connections run on the reactor given to the store, not a global one."""
    run(store.ping())
    assert store._pool.open
    assert all(conn.reactor is store._pool.reactor for conn in store._pool.open)


def test_host_names_are_resolved_off_the_reactor_thread(server: pg.PostgresServer) -> None:
    """pg_host as a name is resolved by the reactor (libpq would block on it) and connects."""
    s = _store(server, host="localhost")
    assert run(s._pool.address())["hostaddr"] in {"127.0.0.1", "::1"}
    run(s.start())
    try:
        assert run(s.ping()) is None
    finally:
        run(s.stop())


def test_migration_waits_for_the_advisory_lock(server: pg.PostgresServer) -> None:
    """migrate blocks while another session holds the migration lock, then runs once."""
    holder = pg.connect_sync(server)
    holder.autocommit = False
    cur = holder.cursor()
    cur.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    s = _store(server, timeout=5.0)
    run(s.start())
    done = threading.Event()
    results: list[Any] = []

    def start() -> Deferred[Any]:
        d = Deferred.fromCoroutine(s.migrate(MIGRATIONS))
        d.addBoth(lambda r: (results.append(r), done.set()))
        return Deferred.fromCoroutine(_noop())

    call(start)
    try:
        assert not done.wait(1.5), "migrate did not wait for the advisory lock"
    finally:
        holder.commit()
        holder.close()
    assert done.wait(30)
    assert isinstance(results[0], list) and len(results[0]) == sum(map(len, MIGRATIONS.values()))
    assert run(s.migrate(MIGRATIONS)) == []
    run(s.stop())


async def _noop() -> None:
    return None


def test_two_nodes_migrating_together_run_each_migration_once(server: pg.PostgresServer) -> None:
    """Concurrent migrate calls from two stores: the union of what they ran is every migration once."""
    from twisted.internet.defer import gatherResults

    a, b = _store(server, "node-a"), _store(server, "node-b")
    run(a.start())
    run(b.start())

    def both() -> Deferred[list[list[str]]]:
        return gatherResults(
            [
                Deferred.fromCoroutine(a.migrate(MIGRATIONS)),
                Deferred.fromCoroutine(b.migrate(MIGRATIONS)),
            ]
        )

    first, second = call(both)
    assert [] in (first, second)
    assert sorted(first + second) == sorted(
        f"{i}: {n}" for i, entries in MIGRATIONS.items() for n, _ in entries
    )
    conn = pg.connect_sync(server)
    with conn.cursor() as cur:
        cur.execute("SELECT migrations FROM schema_migrations WHERE id = 'core'")
        (core,) = cur.fetchone()
    conn.close()
    assert core == [name for name, _ in MIGRATIONS["core"]]
    run(a.stop())
    run(b.stop())


def test_unavailable_fast_when_nothing_listens() -> None:
    """With no server on the port, calls fail with StoreUnavailable well within the timeout."""
    real = reactor()
    s = PostgresStore(
        host="127.0.0.1",
        port=_closed_port(),
        password="x",
        tables=TABLES,
        origin="n",
        clock=Clock(real),
        reactor=real,
        timeout=3.0,
    )
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        run(s.start())
    assert time.monotonic() - began < 3.0
    run(s.stop())


def test_unavailable_within_timeout_when_the_server_hangs() -> None:
    """A server that accepts but never answers gives StoreUnavailable at the timeout, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    real = reactor()
    s = PostgresStore(
        host="127.0.0.1",
        port=listener.getsockname()[1],
        password="x",
        tables=TABLES,
        origin="n",
        clock=Clock(real),
        reactor=real,
        timeout=1.0,
    )
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            run(s.ping())
        assert 0.9 <= time.monotonic() - began < 3.0
        assert not s._pool.open  # the stuck connection was dropped, not kept in the pool
    finally:
        run(s.stop())
        listener.close()


def test_statement_stuck_on_a_lock_times_out_then_store_recovers(
    store: PostgresStore, server: pg.PostgresServer, rows: Rows
) -> None:
    """A write blocked past the timeout fails with StoreUnavailable; the next call works."""
    store.timeout = 1.0
    api = run(store.insert("apis", rows.api()))
    blocker = pg.connect_sync(server)
    blocker.autocommit = False
    cur = blocker.cursor()
    cur.execute("SELECT 1 FROM apis WHERE id = %s FOR UPDATE", [api["id"]])
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            run(store.update("apis", {"id": api["id"]}, {"name": "x"}))
        assert time.monotonic() - began < 3.0
    finally:
        blocker.rollback()
        blocker.close()
    assert run(store.update("apis", {"id": api["id"]}, {"name": "y"}))["name"] == "y"  # type: ignore[index]


def test_reconnects_after_the_server_restarts(
    store: PostgresStore, server: pg.PostgresServer, rows: Rows
) -> None:
    """Stopped server: StoreUnavailable within the timeout; restarted: the same store works again."""
    if not server.owned:
        pytest.skip("KONG_TEST_PG_HOST points at a server this harness cannot restart")
    base = pg.server()
    api = run(store.insert("apis", rows.api()))
    base.stop("fast")
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            run(store.get("apis", {"id": api["id"]}))
        assert time.monotonic() - began < store.timeout + 1
    finally:
        base.start()
    assert run(store.get("apis", {"id": api["id"]})) == api
    assert run(store.insert("apis", rows.api()))


def test_ttl_rows_live_in_the_ttls_table_and_are_cleaned_up(
    store: PostgresStore, server: pg.PostgresServer, rows: Rows
) -> None:
    """A TTL row gets a ttls entry; after expiry the cleanup job deletes both."""
    node = run(store.insert("nodes", rows.node(), ttl=1))
    conn = pg.connect_sync(server)
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, primary_key_value FROM ttls")
        assert cur.fetchall() == [("nodes", node["name"])]
    time.sleep(1.3)
    assert run(store._cleanup_ttls()) == 1
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM nodes")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM ttls")
        assert cur.fetchone() == (0,)
    conn.close()


def test_cleanup_job_is_scheduled_on_the_clock_and_cancelled_by_stop(
    server: pg.PostgresServer,
) -> None:
    """start schedules the 60 s TTL cleanup on the store's Clock; stop leaves nothing scheduled."""
    s = _store(server)
    run(s.start())
    assert s.clock.pending == 1
    run(s.stop())
    assert s.clock.pending == 0


def test_unique_error_parsed_from_the_server_message(store: PostgresStore, rows: Rows) -> None:
    """The database's own unique violation becomes UniqueViolation(field, value)."""
    consumer = run(store.insert("consumers", rows.consumer()))

    def secret(value: str) -> dict[str, Any]:
        return {
            "id": rows.id(),
            "created_at": rows.now(),
            "consumer_id": consumer["id"],
            "key": uuid.uuid4().hex,
            "secret": value,
            "rsa_public_key": None,
            "algorithm": "HS256",
        }

    run(store.insert("jwt_secrets", secret("s3cret")))
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("jwt_secrets", secret("s3cret")))
    assert (e.value.field, e.value.value) == ("secret", "s3cret")


def test_created_at_is_a_timestamp_column(
    store: PostgresStore, server: pg.PostgresServer, rows: Rows
) -> None:
    """created_at is stored as a UTC timestamp (SPEC 7.1) and read back as the same epoch ms."""
    api = run(store.insert("apis", rows.api(created_at=1480291200123)))
    conn = pg.connect_sync(server)
    with conn.cursor() as cur:
        cur.execute("SELECT created_at::text FROM apis WHERE id = %s", [api["id"]])
        assert cur.fetchone() == ("2016-11-28 00:00:00.123",)
    conn.close()
    assert run(store.get("apis", {"id": api["id"]}))["created_at"] == 1480291200123  # type: ignore[index]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
