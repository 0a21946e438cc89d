# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""The change log in sqlite: ``cluster_events`` rows numbered per origin in ``cluster_event_seqs``.

Functions of a connection, run on the store's thread inside the caller's transaction
(a change and its events commit together).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from kongtx.store.common import EVENT_COLUMNS, event_from_row
from kongtx.store.interface import ChangeEvent, ChangeType, Row
from kongtx.store.rules import canonical_json

#: (collection, type, old row, new row) of one change to log.
Change = tuple[str, ChangeType, Row | None, Row | None]


def append_events(
    conn: sqlite3.Connection, origin: str, changes: Sequence[Change], now: int
) -> None:
    """Append one cluster_events row per change, numbering them after ``origin``'s last."""
    found = conn.execute(
        "SELECT seq FROM cluster_event_seqs WHERE origin = ?", (origin,)
    ).fetchone()
    seq = int(found[0]) if found is not None else 0
    for collection, kind, old, new in changes:
        seq += 1
        conn.execute(
            "INSERT INTO cluster_events (origin, seq, at, collection, type, old, new, extra)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, '{}')",
            (
                origin,
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
        (origin, seq),
    )


def read_events_after(
    conn: sqlite3.Connection, origin: str, seq: int, limit: int
) -> list[ChangeEvent]:
    """Events of ``origin`` after ``seq``, oldest first."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM cluster_events"
        " WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?",
        (origin, seq, limit),
    )
    return [event_from_row(r) for r in rows]


def read_events_since(conn: sqlite3.Connection, at: int, limit: int) -> list[ChangeEvent]:
    """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM cluster_events"
        " WHERE at >= ? ORDER BY at, origin, seq LIMIT ?",
        (at, limit),
    )
    return [event_from_row(r) for r in rows]


def delete_events_before(conn: sqlite3.Connection, before: int) -> int:
    """Delete events stamped before ``before``; how many went."""
    cur = conn.execute("DELETE FROM cluster_events WHERE at < ?", (before,))
    return max(cur.rowcount, 0)
