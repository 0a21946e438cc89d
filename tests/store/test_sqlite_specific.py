"""SqliteStore behaviour beyond the shared contract: threads, files, locks, the schema itself."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.store.interface import StoreError, StoreUnavailable
from kongtx.store.migrations import load_migrations
from kongtx.store.sqlite import EXPIRE_COLUMN, SqliteStore, split_statements
from kongtx.store.tables import IDENTIFIERS, TABLES
from tests.reactor_thread import call, reactor, run
from tests.store.helpers import Rows

MIGRATIONS = load_migrations("sqlite", IDENTIFIERS)


def _store(path: Path, origin: str = "node-a", **kw: float) -> SqliteStore:
    real = reactor()
    return SqliteStore(str(path), TABLES, origin, Clock(real), real, **kw)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kong.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = _store(db)
    run(s.start())
    run(s.migrate(MIGRATIONS))
    try:
        yield s
    finally:
        run(s.stop())


def test_schema_matches_tables(store: SqliteStore, db: Path) -> None:
    """Every table of TABLES exists with exactly its columns (TTL tables add the private expiry column)."""
    conn = sqlite3.connect(db)
    try:
        for table in TABLES.values():
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table.name}")')]
            expected = [*table.column_names, *([EXPIRE_COLUMN] if table.ttl else [])]
            assert sorted(cols) == sorted(expected), table.name
            pk = [
                r[1]
                for r in sorted(
                    conn.execute(f'PRAGMA table_info("{table.name}")'), key=lambda r: r[5]
                )
                if r[5]
            ]
            assert pk == list(table.primary_key), table.name
            fks = {
                (r[3], r[2], r[4], r[6])
                for r in conn.execute(f'PRAGMA foreign_key_list("{table.name}")')
            }
            assert fks == {
                (fk.column, fk.table, fk.target, "CASCADE") for fk in table.foreign_keys
            }, table.name
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_queries_run_off_the_reactor_thread(store: SqliteStore) -> None:
    """sqlite runs on the store's own thread, never the reactor's."""
    reactor_thread = call(lambda: threading.current_thread().name)
    worker = run(store._run(lambda conn: threading.current_thread().name))
    assert worker != reactor_thread
    assert "kongtx-sqlite-node-a" in worker


def test_stop_releases_thread_and_timers(db: Path) -> None:
    """stop cancels the TTL sweep, closes the file and ends the thread; later calls fail fast."""
    s = _store(db)
    run(s.start())
    assert s.clock.pending == 1
    before = {t.name for t in threading.enumerate()}
    assert any("kongtx-sqlite-node-a" in n for n in before)
    run(s.stop())
    assert s.clock.pending == 0
    assert not any("kongtx-sqlite-node-a" in t.name for t in threading.enumerate())
    with pytest.raises(StoreUnavailable):
        run(s.ping())


def test_sweep_deletes_expired_rows(store: SqliteStore, db: Path, rows: Rows) -> None:
    """The periodic sweep deletes expired rows from the file, not only from reads."""
    node = run(store.insert("nodes", rows.node(), ttl=1))
    run(store.insert("nodes", rows.node()))
    import time

    time.sleep(1.2)
    assert run(store.sweep()) == 1
    conn = sqlite3.connect(db)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM nodes")]
    finally:
        conn.close()
    assert node["name"] not in names and len(names) == 1


def test_sweep_before_plugin_migrations(db: Path) -> None:
    """The sweep skips TTL tables whose plugin migrations have not run."""
    s = _store(db)
    run(s.start())
    try:
        run(s.migrate({"core": MIGRATIONS["core"]}))
        assert run(s.sweep()) == 0
    finally:
        run(s.stop())


def test_locked_database_is_unavailable(store: SqliteStore, db: Path, rows: Rows) -> None:
    """A write that cannot get the lock within the timeout raises StoreUnavailable."""
    impatient = _store(db, "node-b", timeout=0.2)
    run(impatient.start())
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            run(impatient.insert("apis", rows.api()))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        run(impatient.stop())
    # the lock gone, writes work again
    assert run(store.insert("apis", rows.api()))["id"]


def test_unmigrated_database_names_the_fix(db: Path, rows: Rows) -> None:
    """Using a store whose tables do not exist says to run the migrations."""
    s = _store(db)
    run(s.start())
    try:
        with pytest.raises(StoreError, match="kong migrations up"):
            run(s.insert("apis", rows.api()))
    finally:
        run(s.stop())


def test_failed_migration_rolls_back(db: Path) -> None:
    """A failing migration reports Kong's message and leaves nothing half-done."""
    s = _store(db)
    run(s.start())
    try:
        bad = {
            "core": [
                ("001_ok", "CREATE TABLE a (x TEXT);"),
                ("002_bad", "CREATE TABLE b (x TEXT); NOT SQL;"),
            ]
        }
        with pytest.raises(StoreError, match=r"Error during migration 002_bad: "):
            run(s.migrate(bad))
        assert run(s.executed_migrations()) == {}
        conn = sqlite3.connect(db)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
        assert "a" not in tables and "b" not in tables
    finally:
        run(s.stop())


def test_split_statements() -> None:
    """Scripts split on statement ends only: semicolons in strings, comments and triggers are kept."""
    script = textwrap.dedent(
        """
        -- a comment; with a semicolon
        CREATE TABLE t (x TEXT DEFAULT 'a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = 'c;d';
        END;
        -- trailing comment
        """
    )
    parts = split_statements(script)
    assert len(parts) == 2
    assert "'a;b'" in parts[0]
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")
    with pytest.raises(ValueError):
        split_statements("CREATE TABLE t (x TEXT); SELECT 'unterminated")


_MIGRATE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from twisted.internet import reactor, defer
from kongtx.clock import Clock
from kongtx.store.migrations import load_migrations
from kongtx.store.sqlite import SqliteStore
from kongtx.store.tables import IDENTIFIERS, TABLES

async def main():
    store = SqliteStore({path!r}, TABLES, sys.argv[1], Clock(reactor), reactor, timeout=30)
    await store.start()
    try:
        ran = await store.migrate(load_migrations("sqlite", IDENTIFIERS))
    finally:
        await store.stop()
    print(len(ran))

def go():
    d = defer.Deferred.fromCoroutine(main())
    d.addErrback(lambda f: (f.printTraceback(), sys.exit(1)))
    d.addBoth(lambda _: reactor.stop())

reactor.callWhenRunning(go)
reactor.run()
"""


def test_two_processes_migrate_once(db: Path) -> None:
    """Two node processes starting together on one fresh file run each migration exactly once."""
    root = str(Path(__file__).resolve().parents[2])
    code = _MIGRATE_SCRIPT.format(root=root, path=str(db))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"node-{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    counts = sorted(int(out.strip()) for out, _ in outputs)
    assert counts == [0, sum(len(v) for v in MIGRATIONS.values())]
    conn = sqlite3.connect(db)
    try:
        recorded = dict(conn.execute("SELECT id, migrations FROM schema_migrations"))
    finally:
        conn.close()
    assert set(recorded) == set(MIGRATIONS)


def test_stuck_thread_times_out(db: Path) -> None:
    """A call stuck behind a hung query fails with StoreUnavailable after query_timeout."""
    s = _store(db, query_timeout=0.3)
    run(s.start())
    release = threading.Event()
    blocker: list[Deferred[bool]] = []
    try:
        call(
            lambda: blocker.append(
                Deferred.fromCoroutine(s._run(lambda conn: release.wait(10), timed=False))
            )
        )
        with pytest.raises(StoreUnavailable, match="did not answer within 0.3"):
            run(s.ping())
    finally:
        release.set()
        if blocker:
            assert run(blocker[0]) is True
        run(s.stop())
