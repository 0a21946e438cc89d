"""CassandraStore behaviour beyond the shared contract: driver plumbing, schema, TTLs, outages.

The contract suite (test_contract.py) already holds CassandraStore to IStore; these tests
cover what only Cassandra shows: the keyspace's replication, native TTLs, the paging-state
tokens, the event log's partitioning, results handed back on the reactor thread, and
StoreUnavailable/reconnection when the server is absent, stuck or restarted.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kongtx.clock import Clock
from kongtx.store.cassandra import (
    EXPIRE_COLUMN,
    CassandraStore,
    decode_token,
    encode_token,
    parse_data_centers,
    replication,
    split_cql,
)
from kongtx.store.interface import InvalidOffset, StoreUnavailable
from kongtx.store.migrations import load_migrations
from kongtx.store.tables import IDENTIFIERS, TABLES
from tests.reactor_thread import reactor, run
from tests.servers import cassandra as cs
from tests.store.helpers import Rows

MIGRATIONS = load_migrations("cassandra", IDENTIFIERS)


# --------------------------------------------------------------------------- unit (no server)


def test_split_cql_drops_comments_and_splits_statements() -> None:
    """A .cql file becomes its statements, comments dropped, semicolons as terminators."""
    script = "-- a comment\nCREATE TABLE t (a int PRIMARY KEY);\n\nCREATE INDEX ON t (a);\n"
    assert split_cql(script) == ["CREATE TABLE t (a int PRIMARY KEY)", "CREATE INDEX ON t (a)"]
    assert split_cql("-- only a comment\n") == []


def test_replication_maps() -> None:
    """cassandra_repl_strategy/_factor/_data_centers give the keyspace's replication map."""
    assert (
        replication("SimpleStrategy", 3, "")
        == "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    assert replication("NetworkTopologyStrategy", 1, "dc1:2,dc2:3") == (
        "{'class': 'NetworkTopologyStrategy', 'dc1': 2, 'dc2': 3}"
    )
    assert parse_data_centers(["dc1:2", " dc2:3"]) == {"dc1": 2, "dc2": 3}
    with pytest.raises(ValueError):
        parse_data_centers("dc1")
    with pytest.raises(ValueError):
        replication("LocalStrategy", 1, "")


def test_offset_tokens_carry_the_paging_state() -> None:
    """A token is base64url of a prefix and the driver's paging state; anything else is refused."""
    state = b"\x00\x10\xff\xfe paging"
    token = encode_token(state, "apis")
    assert "=" not in token and decode_token(token, "apis") == state
    with pytest.raises(InvalidOffset):
        decode_token(token, "consumers")  # a token of another listing
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    for bad in ["", "!!", base64.urlsafe_b64encode(b"k1:xx").decode(), token[:6], tampered]:
        with pytest.raises(InvalidOffset):
            decode_token(bad, "apis")


def test_timeout_is_in_milliseconds_like_cassandra_timeout() -> None:
    """timeout= takes cassandra_timeout's unit (ms); the keyspace name is validated."""
    from twisted.internet.task import Clock as FakeReactorTime

    clock = Clock(FakeReactorTime())
    store = CassandraStore(tables=TABLES, origin="n", clock=clock, reactor=None, timeout=2500)
    assert store.timeout == 2.5
    with pytest.raises(ValueError):
        CassandraStore(tables=TABLES, origin="n", clock=clock, reactor=None, keyspace="a-b")


def test_harness_skips_without_jars_unless_required(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No jars: the harness skips loudly, or fails when KONG_TEST_REQUIRE names cassandra."""
    monkeypatch.setenv("KONG_TEST_CASSANDRA_LIB", str(tmp_path))
    monkeypatch.setenv("KONG_TEST_REQUIRE", "postgres")
    with pytest.raises(pytest.skip.Exception, match="no cassandra-all"):
        cs._start_owned()
    monkeypatch.setenv("KONG_TEST_REQUIRE", "postgres,cassandra")
    with pytest.raises(pytest.fail.Exception, match="KONG_TEST_REQUIRE"):
        cs._start_owned()


# --------------------------------------------------------------------------- against the server


def _store(keyspace: str, origin: str = "node-a", **kw: Any) -> CassandraStore:
    srv = cs.server()
    real = reactor()
    settings: dict[str, Any] = {**srv.store_kwargs(), "timeout": 20000, **kw}
    return CassandraStore(
        **settings, keyspace=keyspace, tables=TABLES, origin=origin, clock=Clock(real), reactor=real
    )


@pytest.fixture
def store() -> Iterator[CassandraStore]:
    """A started store on the session's shared, emptied keyspace."""
    keyspace = cs.shared_keyspace(MIGRATIONS)
    s = _store(keyspace)
    run(s.start())
    try:
        yield s
    finally:
        run(s.stop())


def test_uses_the_drivers_own_io_loop_not_twisted_connection(store: CassandraStore) -> None:
    """The driver keeps its own event loop (libev/asyncore), never the deprecated TwistedConnection."""
    name = store._driver.cluster.connection_class.__name__
    assert name != "TwistedConnection"
    assert name in {"LibevConnection", "AsyncoreConnection", "AsyncioConnection"}


def test_results_are_delivered_on_the_reactor_thread(store: CassandraStore) -> None:
    """Code after an awaited query runs on the reactor thread (callFromThread), not the driver's."""

    async def where() -> str:
        await store.ping()
        return threading.current_thread().name

    assert run(where()) == "test-reactor"


def test_keyspace_created_with_the_configured_replication() -> None:
    """migrate creates the keyspace with SimpleStrategy and cassandra_repl_factor."""
    cs.drop_keyspace(cs.server(), "kt_repl")
    s = _store("kt_repl", repl_factor=1)
    run(s.start())
    try:
        run(s.migrate({"core": MIGRATIONS["core"][:1]}), timeout=120)
        row = (
            cs.admin_session()
            .execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = 'kt_repl'"
            )
            .one()
        )
        assert row.replication["class"].endswith("SimpleStrategy")
        assert row.replication["replication_factor"] == "1"
    finally:
        run(s.stop())
        cs.drop_keyspace(cs.server(), "kt_repl")


def test_cluster_events_partitioned_by_origin_clustered_by_seq(store: CassandraStore) -> None:
    """The event log is one partition per origin, ordered by seq inside it."""
    rows = cs.admin_session().execute(
        "SELECT column_name, kind FROM system_schema.columns"
        " WHERE keyspace_name = %s AND table_name = 'cluster_events'",
        [store.keyspace],
    )
    kinds = {r.column_name: r.kind for r in rows}
    assert kinds["origin"] == "partition_key" and kinds["seq"] == "clustering"


def test_ttl_rows_use_native_ttls(store: CassandraStore, rows: Rows) -> None:
    """A TTL row is written USING TTL (one second of slack) and an update without TTL keeps it.

    Cassandra reports a cell's TTL in whole seconds from its own truncated "now", and the
    update writes the time left rounded up (plus the slack), so the re-read may show one
    second more than the first read when a second ticked between them: what must hold is
    that the expiry itself is kept.
    """
    node = run(store.insert("nodes", rows.node(), ttl=60))
    session = cs.admin_session()
    query = (
        f'SELECT TTL(cluster_listening_address) AS t, "{EXPIRE_COLUMN}" AS e'
        f' FROM "{store.keyspace}".nodes WHERE name = %s'
    )
    first = session.execute(query, [node["name"]]).one()
    assert 55 <= first.t <= 61 and first.e is not None
    run(store.update("nodes", {"name": node["name"]}, {"cluster_listening_address": "x:1"}))
    second = session.execute(query, [node["name"]]).one()
    assert second.t is not None and second.t <= first.t + 1
    assert second.e == first.e
    plain = run(store.insert("nodes", rows.node()))
    assert session.execute(query, [plain["name"]]).one().t is None


def test_concurrent_writes_of_one_node_number_events_in_order(
    store: CassandraStore, rows: Rows
) -> None:
    """Concurrent writes of one store log contiguous seqs, each seq visible only after the one before."""
    from twisted.internet.defer import Deferred, gatherResults

    from tests.reactor_thread import call

    consumers = [rows.consumer() for _ in range(12)]

    def all_at_once() -> Deferred[list[Any]]:
        return gatherResults(
            [Deferred.fromCoroutine(store.insert("consumers", c)) for c in consumers]
        )

    call(all_at_once)
    events = run(store.events_after("node-a", 0, 100))
    assert [e.seq for e in events] == list(range(1, 13))
    assert sorted(e.new["id"] for e in events if e.new) == sorted(c["id"] for c in consumers)
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_tampered_paging_state_is_an_invalid_offset(store: CassandraStore, rows: Rows) -> None:
    """A forged token or another listing's token is refused before reaching the server."""
    for _ in range(3):
        run(store.insert("consumers", rows.consumer()))
    page = run(store.page("consumers", {}, 2, None))
    assert page.offset is not None
    for bad in [encode_token(b"\xff" * 7), page.offset]:
        with pytest.raises(InvalidOffset):
            run(store.page("consumers", {"username": "x"}, 2, bad))
    # the connection survived: the same token still pages the listing it came from
    assert len(run(store.page("consumers", {}, 2, page.offset)).rows) == 1


def test_unavailable_fast_when_nothing_listens() -> None:
    """With no server on the port, start fails with StoreUnavailable within the timeout."""
    s = _store("kt_none", port=_closed_port(), timeout=2000)
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        run(s.start())
    assert time.monotonic() - began < 10
    run(s.stop())


def test_unavailable_when_the_server_hangs() -> None:
    """A server that accepts but never answers gives StoreUnavailable, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    s = _store("kt_none", port=listener.getsockname()[1], timeout=1000)
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            run(s.start())
        assert time.monotonic() - began < 15
    finally:
        run(s.stop())
        listener.close()


def test_reconnects_after_the_server_restarts(store: CassandraStore, rows: Rows) -> None:
    """Killed server: StoreUnavailable within the timeout; restarted: the same store works again."""
    srv = cs.server()
    if not srv.owned:
        pytest.skip("KONG_TEST_CASSANDRA_HOST points at a server this harness cannot restart")
    consumer = run(store.insert("consumers", rows.consumer()))
    time.sleep(0.5)
    srv.stop()
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            run(store.get("consumers", {"id": consumer["id"]}))
        assert time.monotonic() - began < store.timeout + 2
    finally:
        srv.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            run(store.ping())
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    got = _eventually(lambda: run(store.get("consumers", {"id": consumer["id"]})))
    assert got == consumer
    _eventually(lambda: cs.admin_session().execute("SELECT now() FROM system.local").one())


def _eventually(fn: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
