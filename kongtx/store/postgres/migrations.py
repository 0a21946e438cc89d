# -*- test-case-name: tests.store.test_postgres_specific -*-
"""PostgreSQL migrations and reset, under an advisory lock so that nodes migrate once.

Two nodes starting together: the second waits on the lock, then finds every
migration recorded and runs none.  DDL is transactional in PostgreSQL, so a failing
migration leaves the schema as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import psycopg2

from kongtx.store.common import quote
from kongtx.store.interface import StoreError
from kongtx.store.postgres.pool import Txn
from kongtx.store.tables import CLUSTER_EVENTS, SCHEMA_MIGRATIONS

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


async def run_migrations(t: Txn, migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
    """Run every migration not yet recorded, each under a savepoint; ``"identifier: name"`` of each."""
    await t.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    await t.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (id text PRIMARY KEY, migrations varchar(100)[])"
    )
    done = {
        k: list(v or []) for k, v in await t.execute("SELECT id, migrations FROM schema_migrations")
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


async def executed(t: Txn) -> dict[str, list[str]]:
    """Identifier -> names already run (``{}`` on an empty database)."""
    exists = await t.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists[0][0]:
        return {}
    rows = await t.execute("SELECT id, migrations FROM schema_migrations ORDER BY id")
    return {k: list(v) for k, v in rows if v}


async def drop_all(t: Txn, tables: Iterable[str]) -> None:
    """Drop ``tables``, the internal ones and the migrations' functions, under the lock."""
    await t.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    for name in [*tables, *INTERNAL_TABLES]:
        await t.execute(f"DROP TABLE IF EXISTS {quote(name)} CASCADE")
    for fn in _FUNCTIONS:
        await t.execute(f"DROP FUNCTION IF EXISTS {fn} CASCADE")
