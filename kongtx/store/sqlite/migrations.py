# -*- test-case-name: tests.store.test_sqlite_specific -*-
"""sqlite migrations: ``schema_migrations`` bookkeeping, running scripts, dropping every table.

Run on the store's thread under ``BEGIN EXCLUSIVE`` (see :mod:`.store`), so that
nodes starting together on one file migrate once.
"""

from __future__ import annotations

import json
import sqlite3

from kongtx.store.common import quote
from kongtx.store.interface import StoreError
from kongtx.store.sqlite.sql import split_statements

#: identifier -> [(migration name, script)], in order
Plan = list[tuple[str, list[tuple[str, str]]]]


def run_migrations(conn: sqlite3.Connection, plan: Plan) -> list[str]:
    """Run every migration of ``plan`` not yet recorded; ``"identifier: name"`` of each run."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (id TEXT PRIMARY KEY, migrations TEXT NOT NULL)"
    )
    done = executed(conn)
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
                raise StoreError(f"[sqlite error] Error during migration {name}: {e}") from e
            names.append(name)
            conn.execute(
                "INSERT INTO schema_migrations (id, migrations) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET migrations = excluded.migrations",
                (identifier, json.dumps(names)),
            )
            ran.append(f"{identifier}: {name}")
    return ran


def executed(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Identifier -> names already run (``{}`` before the first migration)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return {}
    rows = conn.execute("SELECT id, migrations FROM schema_migrations ORDER BY rowid")
    return {ident: list(json.loads(names)) for ident, names in rows}


def table_names(conn: sqlite3.Connection) -> set[str]:
    """The tables present in the file (a plugin's exist only once its migrations ran)."""
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def drop_all(conn: sqlite3.Connection) -> None:
    """Drop every table in the file, newest (children) first."""
    names = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY rowid DESC"
        )
    ]
    for name in names:
        conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
