"""The backends the store contract suite runs on: one factory each.

Adding a backend is one entry in :data:`BACKENDS`: a :class:`Backend` whose
``make`` builds a :class:`Harness` for one test.  A factory whose server cannot
be reached calls :func:`tests.servers.unavailable`, which skips the test loudly,
or fails it when ``KONG_TEST_REQUIRE`` (e.g. ``postgres,cassandra``) names the
backend.  Factories run on the test thread: they build stores but do not start
them (the suite starts, migrates and stops every store on the reactor thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.task import Clock as FakeReactorTime

from kongtx.clock import Clock
from kongtx.store.interface import IStore
from kongtx.store.memory import MemoryStore
from kongtx.store.migrations import load_migrations
from kongtx.store.sqlite import SqliteStore
from kongtx.store.tables import IDENTIFIERS, TABLES
from tests.reactor_thread import reactor

Migrations = Mapping[str, Sequence[tuple[str, str]]]


@dataclass
class Context:
    """What a factory gets for one test."""

    #: a private directory for this test (files, sockets, logs).
    tmp_path: Path
    #: the test's node id, usable to name per-test databases or keyspaces.
    test_id: str


@dataclass
class Harness:
    """One database under test, and how to reach it."""

    #: a not-yet-started store on this test's database, stamping events with the origin.
    new_store: Callable[[str], IStore]
    #: the migrations this backend runs (every identifier that has scripts).
    migrations: Migrations
    #: let ``seconds`` pass for TTLs (a fake clock advances; real servers are waited for).
    advance: Callable[[float], None] = time.sleep
    #: drop what the harness created (called after every store was stopped).
    cleanup: Callable[[], None] = lambda: None
    #: whether ``migrate`` runs the scripts for real (the memory fake only records names).
    executes_scripts: bool = True
    extras: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Backend:
    """A named factory: ``make(context)`` returns the harness for one test."""

    name: str
    make: Callable[[Context], Harness]


def all_migrations(backend: str) -> Migrations:
    """Every packaged migration of ``backend``, core first."""
    return load_migrations(backend, IDENTIFIERS)


def memory_backend(ctx: Context) -> Harness:
    """The in-memory fake on a fake clock (TTLs expire when the test advances it)."""
    fake = FakeReactorTime()
    fake.advance(time.time())
    clock = Clock(fake)
    first: list[MemoryStore] = []

    def new_store(origin: str) -> IStore:
        if not first:
            first.append(MemoryStore(TABLES, origin, clock))
            return first[0]
        return first[0].peer(origin)

    return Harness(
        new_store=new_store,
        # the fake runs no scripts; the sqlite names stand in for "every migration".
        migrations=all_migrations("sqlite"),
        advance=fake.advance,
        executes_scripts=False,
        extras={"clock": clock},
    )


def sqlite_backend(ctx: Context) -> Harness:
    """A sqlite file in the test's directory; every store opens the same file."""
    path = str(ctx.tmp_path / "kong.db")
    real = reactor()

    def new_store(origin: str) -> IStore:
        return SqliteStore(path, TABLES, origin, Clock(real), real)

    return Harness(new_store=new_store, migrations=all_migrations("sqlite"), extras={"path": path})


#: Every backend of the contract suite.  Append new ones here (one entry each).
BACKENDS: list[Backend] = [
    Backend("memory", memory_backend),
    Backend("sqlite", sqlite_backend),
]


# --------------------------------------------------------------------------- real servers
# (PostgreSQL and Cassandra: tests/servers starts one of each per session.)


def _db_name(prefix: str, test_id: str) -> str:
    import hashlib

    return f"{prefix}_{hashlib.sha1(test_id.encode()).hexdigest()[:16]}"


def postgres_backend(ctx: Context) -> Harness:
    """A fresh database per test on the session's PostgreSQL; dropped afterwards."""
    from kongtx.store.postgres import PostgresStore
    from tests.servers import postgres as pg

    server = pg.fresh_database(pg.server(), _db_name("kt", ctx.test_id))
    real = reactor()

    def new_store(origin: str) -> IStore:
        return PostgresStore(
            **server.store_kwargs(), tables=TABLES, origin=origin, clock=Clock(real), reactor=real
        )

    def cleanup() -> None:
        pg.drop_database(server)

    return Harness(
        new_store=new_store,
        migrations=all_migrations("postgres"),
        cleanup=cleanup,
        extras={"server": server},
    )


def cassandra_backend(ctx: Context) -> Harness:
    """A keyspace on the session's Cassandra: one migrated keyspace truncated before each
    test (schema changes take seconds), or a fresh one for tests of migrate/reset."""
    from kongtx.store.cassandra import CassandraStore
    from tests.servers import cassandra as cs

    server = cs.server()
    real = reactor()
    migrations = all_migrations("cassandra")
    fresh = "migrat" in ctx.test_id or "reset" in ctx.test_id
    keyspace = _db_name("kt", ctx.test_id) if fresh else cs.shared_keyspace(migrations)
    if fresh:
        cs.drop_keyspace(server, keyspace)

    def new_store(origin: str) -> IStore:
        return CassandraStore(
            **server.store_kwargs(),
            keyspace=keyspace,
            timeout=20000,
            tables=TABLES,
            origin=origin,
            clock=Clock(real),
            reactor=real,
        )

    def cleanup() -> None:
        if fresh:
            cs.drop_keyspace(server, keyspace)

    return Harness(
        new_store=new_store,
        migrations=migrations,
        cleanup=cleanup,
        extras={"server": server, "keyspace": keyspace},
    )


BACKENDS.append(Backend("postgres", postgres_backend))
BACKENDS.append(Backend("cassandra", cassandra_backend))
