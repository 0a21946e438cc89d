# -*- test-case-name: tests.store.test_contract -*-
"""What the SQL and CQL backends share, written once: identifiers, cascades, events, counters.

The memory store keeps rows as Python objects and needs little of this; sqlite,
PostgreSQL and Cassandra each quote identifiers, walk the same foreign keys for a
cascade, read ``cluster_events`` rows back into :class:`ChangeEvent` and check
counter keys the same way, so those rules live here and cannot drift apart.  The
stores whose reads are awaited (memory, PostgreSQL, Cassandra) collect a deletion's
dependants with one walk (:func:`cascade_rows`), and so does sqlite, whose reads run
synchronously on its own thread (:func:`run_to_end`).  The two network backends
also bound every wait on the server the same way (:func:`within`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.store.interface import ChangeEvent, ForeignKey, Row, StoreUnavailable, Table
from kongtx.store.rules import check_columns

T = TypeVar("T")

#: The epoch as the naive UTC ``datetime`` PostgreSQL's and Cassandra's drivers take and give.
EPOCH = datetime(1970, 1, 1)

#: The ``cluster_events`` columns :func:`event_from_row` reads, in its order.
EVENT_COLUMNS = "origin, seq, at, collection, type, old, new, extra"


def quote(name: str) -> str:
    """Quote an identifier (``group`` and ``key`` are keywords in SQL and CQL)."""
    return '"' + name.replace('"', '""') + '"'


def driver_value(kind: str, value: Any) -> Any:
    """A row's value of a ``kind`` column as PostgreSQL's and Cassandra's drivers take it:
    an epoch-ms timestamp as a naive UTC ``datetime``, JSON as its text, the rest as it is."""
    if value is None:
        return None
    if kind == "timestamp":
        return EPOCH + timedelta(milliseconds=value)
    if kind == "json":
        return json.dumps(value)
    return value


def is_uuid_text(value: Any) -> bool:
    """Whether ``value`` reads as a uuid (any form :class:`uuid.UUID` accepts)."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def children_of(tables: Mapping[str, Table]) -> dict[str, list[tuple[Table, ForeignKey]]]:
    """Referenced table -> ``[(referencing table, its foreign key)]``, in table order (cascades)."""
    children: dict[str, list[tuple[Table, ForeignKey]]] = {}
    for child in tables.values():
        for fk in child.foreign_keys:
            children.setdefault(fk.table, []).append((child, fk))
    return children


#: ``dependants(table, column, value)``: the live rows of ``table`` whose ``column`` holds
#: ``value``, in listing order (:func:`~kongtx.store.rules.sort_key`).
Dependants = Callable[[Table, str, Any], Awaitable[list[Row]]]


async def cascade_rows(
    children: Mapping[str, Sequence[tuple[Table, ForeignKey]]],
    table: Table,
    row: Row,
    dependants: Dependants,
) -> list[tuple[Table, Row]]:
    """What deleting ``row`` takes: the row, then depth-first (per referencing table of
    ``children``, :func:`children_of`, in listing order) its dependants, each row once."""
    out: list[tuple[Table, Row]] = []
    seen: set[tuple[str, tuple[Any, ...]]] = set()

    async def visit(table: Table, row: Row) -> None:
        mark = (table.name, tuple(row[c] for c in table.primary_key))
        if mark in seen:
            return
        seen.add(mark)
        out.append((table, row))
        for child, fk in children.get(table.name, []):
            if row[fk.target] is None:
                continue
            for dependant in await dependants(child, fk.column, row[fk.target]):
                await visit(child, dependant)

    await visit(table, row)
    return out


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine none of whose awaits suspends (one whose reads are all
    synchronous, such as sqlite's on its thread), run to its end now."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError(f"{coroutine!r} waited for something: it cannot run to its end now")


def event_from_row(values: Sequence[Any]) -> ChangeEvent:
    """A ``cluster_events`` row (:data:`EVENT_COLUMNS`, JSON as text) as a :class:`ChangeEvent`."""
    origin, seq, at, collection, kind, old, new, extra = values
    return ChangeEvent(
        origin=origin,
        seq=int(seq),
        at=int(at),
        collection=collection,
        type=kind,
        old=None if old is None else json.loads(old),
        new=None if new is None else json.loads(new),
        extra=json.loads(extra) if extra else {},
    )


def event_params(
    origin: str, seq: int, at: int, collection: str, kind: str, old: Row | None, new: Row | None
) -> list[Any]:
    """The values of one ``cluster_events`` row, in :data:`EVENT_COLUMNS` order (JSON as text)."""
    return [
        origin,
        seq,
        at,
        collection,
        kind,
        None if old is None else json.dumps(old),
        None if new is None else json.dumps(new),
        "{}",
    ]


def counter_keys(
    table: Table, keys: Sequence[Mapping[str, Any]], encode: Callable[[str, Any], Any]
) -> list[list[Any]]:
    """Primary-key parameters (each value ``encode(column, value)``) of each counter key.

    Raises ValueError / KeyError on misuse: an unknown column, the ``value``
    column itself, or a primary key column missing.
    """
    out: list[list[Any]] = []
    for key in keys:
        check_columns(table, key)
        if "value" in key:
            raise ValueError(f"{table.name}: a counter key cannot hold the value column")
        if any(key.get(c) is None for c in table.primary_key):
            raise ValueError(
                f"{table.name}: a counter key needs the primary key {table.primary_key}"
            )
        out.append([encode(c, key[c]) for c in table.primary_key])
    return out


def within(
    clock: Clock,
    d: Deferred[T],
    seconds: float,
    message: str,
    drop: Callable[[], None] | None = None,
) -> Deferred[T]:
    """``d``'s outcome, or :class:`StoreUnavailable` (``message``) after ``seconds`` on ``clock``.

    A fresh Deferred, so that ``d`` itself is never cancelled (txpostgres' canceller
    blocks; a driver future cannot be taken back); ``d``'s late outcome is consumed
    here.  ``drop`` (forget the connection) runs when the wait expires or is cancelled;
    on expiry the result fails first, since dropping may fire ``d`` at once.
    """
    result: Deferred[T] = Deferred(lambda _: drop() if drop is not None else None)

    def expired() -> None:
        if not result.called:
            result.errback(Failure(StoreUnavailable(message)))
            if drop is not None:
                drop()

    call = clock.call_later(seconds, expired)

    def done(outcome: Any) -> None:
        if call.active():
            call.cancel()
        if result.called:
            return
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    d.addBoth(done)
    return result
