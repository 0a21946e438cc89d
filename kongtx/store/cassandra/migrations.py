# -*- test-case-name: tests.store.test_cassandra_specific -*-
"""Cassandra migrations: the keyspace, an LWT lock so that nodes migrate once, the record.

A statement that fails because its object already exists is skipped, so a re-run
after a partial failure completes (CQL DDL is not transactional).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kongtx.store.cassandra.cql import qualified, split_cql
from kongtx.store.cassandra.session import CassandraSession
from kongtx.store.common import quote
from kongtx.store.interface import StoreError, StoreUnavailable

_LOCK_TABLE = "kongtx_locks"


async def ensure_keyspace(driver: CassandraSession, replication: str, timeout: float) -> None:
    """Create the keyspace (with ``replication``) and the lock table, then use the keyspace."""
    ks = driver.keyspace
    await driver.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {quote(ks)} WITH replication = {replication}",
        limit=timeout,
    )
    await driver.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(ks, _LOCK_TABLE)} (key text PRIMARY KEY, owner text)",
        limit=timeout,
    )
    await driver.use_keyspace()


async def lock(driver: CassandraSession, owner: str, timeout: float) -> None:
    """Take the migration lock (a lightweight transaction row with a TTL)."""
    clock = driver.clock
    deadline = clock.seconds() + timeout
    while True:
        rows = await driver.rows(
            f"INSERT INTO {qualified(driver.keyspace, _LOCK_TABLE)} (key, owner)"
            " VALUES ('migrations', %s) IF NOT EXISTS USING TTL 120",
            [owner],
        )
        if rows and rows[0][0]:
            return
        if clock.seconds() > deadline:
            raise StoreUnavailable("timed out waiting for the Cassandra migration lock")
        await clock.sleep(0.5)


async def unlock(driver: CassandraSession, owner: str) -> None:
    await driver.rows(
        f"DELETE FROM {qualified(driver.keyspace, _LOCK_TABLE)}"
        " WHERE key = 'migrations' IF owner = %s",
        [owner],
    )


async def recorded(driver: CassandraSession) -> dict[str, list[str]]:
    """Identifier -> names already run (``{}`` when the keyspace is empty), core first."""
    exists = await driver.rows(
        "SELECT table_name FROM system_schema.tables"
        " WHERE keyspace_name = %s AND table_name = 'schema_migrations'",
        [driver.keyspace],
    )
    if not exists:
        return {}
    rows = await driver.rows(
        f"SELECT id, migrations FROM {qualified(driver.keyspace, 'schema_migrations')}"
    )
    found = {k: list(v) for k, v in rows if v}
    return {k: found[k] for k in sorted(found, key=lambda i: (i != "core", i))}


async def run_migrations(
    driver: CassandraSession,
    migrations: Mapping[str, Sequence[tuple[str, str]]],
    timeout: float,
) -> list[str]:
    """Run every migration not yet recorded (the lock held); ``"identifier: name"`` of each."""
    record = qualified(driver.keyspace, "schema_migrations")
    await driver.execute(
        f"CREATE TABLE IF NOT EXISTS {record} (id text PRIMARY KEY, migrations list<text>)",
        limit=timeout,
    )
    rows = await driver.rows(f"SELECT id, migrations FROM {record}")
    done = {k: list(v or []) for k, v in rows}
    ran: list[str] = []
    for identifier, entries in migrations.items():
        names = done.setdefault(identifier, [])
        for name, script in entries:
            if name in names:
                continue
            for statement in split_cql(script):
                try:
                    await driver.execute(statement, limit=timeout)
                except StoreUnavailable:
                    raise
                except Exception as e:
                    if "already exist" in str(e) or "conflicts with an existing column" in str(e):
                        continue  # a re-run after a partial failure
                    raise StoreError(f"[cassandra error] Error during migration {name}: {e}") from e
            await driver.rows(
                f"UPDATE {record} SET migrations = migrations + %s WHERE id = %s",
                [[name], identifier],
            )
            names.append(name)
            ran.append(f"{identifier}: {name}")
    return ran
