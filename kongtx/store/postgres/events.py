# -*- test-case-name: tests.store.test_contract,tests.store.test_postgres_specific -*-
"""The change log in PostgreSQL: ``cluster_events``, numbered per origin by ``cluster_events_seq``.

Functions of a :class:`~.pool.Txn`: a change and its event commit together.
"""

from __future__ import annotations

from kongtx.store.common import EVENT_COLUMNS, event_from_row, event_params
from kongtx.store.interface import ChangeEvent, ChangeType, Row
from kongtx.store.postgres.pool import Txn

#: JSON columns read as text, for :func:`~kongtx.store.common.event_from_row`.
_EVENT_COLS = "origin, seq, at, collection, type, old::text, new::text, extra::text"


async def log_event(
    t: Txn,
    origin: str,
    at: int,
    collection: str,
    kind: ChangeType,
    old: Row | None,
    new: Row | None,
) -> None:
    """Append one event, numbered after ``origin``'s last (the seq row is locked till commit)."""
    rows = await t.execute(
        "INSERT INTO cluster_events_seq (origin, seq) VALUES (%s, 1)"
        " ON CONFLICT (origin) DO UPDATE SET seq = cluster_events_seq.seq + 1 RETURNING seq",
        [origin],
    )
    await t.execute(
        f"INSERT INTO cluster_events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        event_params(origin, rows[0][0], at, collection, kind, old, new),
    )


async def events_after(t: Txn, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
    """Events of ``origin`` after ``seq``, oldest first."""
    rows = await t.execute(
        f"SELECT {_EVENT_COLS} FROM cluster_events"
        " WHERE origin = %s AND seq > %s ORDER BY seq LIMIT %s",
        [origin, seq, limit],
    )
    return [event_from_row(r) for r in rows]


async def events_since(t: Txn, at: int, limit: int) -> list[ChangeEvent]:
    """Events of every origin stamped at or after ``at``, by (at, origin, seq)."""
    rows = await t.execute(
        f"SELECT {_EVENT_COLS} FROM cluster_events"
        " WHERE at >= %s ORDER BY at, origin, seq LIMIT %s",
        [at, limit],
    )
    return [event_from_row(r) for r in rows]


async def prune_events(t: Txn, before: int) -> int:
    """Delete events stamped before ``before``; how many went."""
    await t.execute("DELETE FROM cluster_events WHERE at < %s", [before])
    return int(t.rowcount)
