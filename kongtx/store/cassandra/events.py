# -*- test-case-name: tests.store.test_cassandra_specific -*-
"""The change log in Cassandra, and the logged batches that write a change with its events.

``cluster_events`` is partitioned by origin and clustered by seq; the next seq of this
node's origin is kept in memory (seeded from ``cluster_events_seq`` on first use),
which assumes one running store per origin, as node names guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import DeferredLock

from kongtx.store.cassandra.cql import qualified
from kongtx.store.cassandra.session import CassandraSession
from kongtx.store.common import EVENT_COLUMNS, event_from_row, event_params
from kongtx.store.interface import ChangeEvent, ChangeType, Row, StoreUnavailable

#: (collection, type, old row, new row) of one change to log.
Change = tuple[str, ChangeType, Row | None, Row | None]
#: One CQL statement and its parameters.
Statement = tuple[str, list[Any]]


class EventLog:
    """This origin's events: numbered in memory, written in batches one at a time."""

    def __init__(self, driver: CassandraSession, origin: str) -> None:
        self._driver = driver
        self.origin = origin
        self._seq: int | None = None
        self._seq_lock = DeferredLock()

    def _table(self, name: str) -> str:
        return qualified(self._driver.keyspace, name)

    def forget(self) -> None:
        """Re-read the last seq from the database next time (after a stop or a reset)."""
        self._seq = None

    async def _last_seq(self) -> int:
        """The last seq this origin used (seeded once from the database)."""
        if self._seq is None:
            rows = await self._driver.rows(
                f"SELECT seq FROM {self._table('cluster_events_seq')} WHERE origin = %s",
                [self.origin],
            )
            last = await self._driver.rows(
                f"SELECT seq FROM {self._table('cluster_events')} WHERE origin = %s"
                " ORDER BY seq DESC LIMIT 1",
                [self.origin],
            )
            self._seq = max(
                int(rows[0][0]) if rows and rows[0][0] is not None else 0,
                int(last[0][0]) if last else 0,
            )
        return self._seq

    def _statements(self, changes: Sequence[Change], seqs: list[int]) -> list[Statement]:
        at = self._driver.clock.millis()
        out: list[Statement] = []
        for (collection, kind, old, new), seq in zip(changes, seqs, strict=True):
            out.append(
                (
                    f"INSERT INTO {self._table('cluster_events')} ({EVENT_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    event_params(self.origin, seq, at, collection, kind, old, new),
                )
            )
        if seqs:
            out.append(
                (
                    f"UPDATE {self._table('cluster_events_seq')} SET seq = %s WHERE origin = %s",
                    [seqs[-1], self.origin],
                )
            )
        return out

    async def batch(self, writes: list[Statement], changes: Sequence[Change]) -> None:
        """Apply ``writes`` and the events of ``changes`` in one logged batch.

        Batches of this store run one at a time: a reader that saw seq N must never
        see N-1 appear later (it would skip it), which concurrent batches could cause.
        A batch refused by the server gives its numbers back; one whose outcome is
        unknown (timeout) keeps them, which may leave a gap that readers step over.
        """
        from cassandra.encoder import Encoder

        async with self._seq_lock:
            last = await self._last_seq()
            seqs = list(range(last + 1, last + 1 + len(changes)))
            self._seq = last + len(changes)
            statements = writes + self._statements(changes, seqs)
            encoder = Encoder()
            body = []
            for cql, params in statements:
                body.append(cql % tuple(encoder.cql_encode_all_types(p) for p in params))
            try:
                await self._driver.execute("BEGIN BATCH\n" + ";\n".join(body) + ";\nAPPLY BATCH")
            except StoreUnavailable:
                raise
            except BaseException:
                self._seq = last
                raise

    async def after(self, origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """A slice of ``origin``'s partition after ``seq``."""
        rows = await self._driver.rows(
            f"SELECT {EVENT_COLUMNS} FROM {self._table('cluster_events')}"
            " WHERE origin = %s AND seq > %s ORDER BY seq ASC LIMIT %s",
            [origin, seq, int(limit)],
        )
        return [event_from_row(r) for r in rows]

    async def since(self, at: int, limit: int) -> list[ChangeEvent]:
        """Every origin's events at or after ``at`` (a filtered scan), by (at, origin, seq)."""
        rows = await self._driver.rows(
            f"SELECT {EVENT_COLUMNS} FROM {self._table('cluster_events')}"
            " WHERE at >= %s ALLOW FILTERING",
            [at],
        )
        events = sorted((event_from_row(r) for r in rows), key=lambda e: (e.at, e.origin, e.seq))
        return events[: int(limit)]

    async def prune(self, before: int) -> int:
        """Delete events stamped before ``before``; the per-origin sequences go on."""
        rows = await self._driver.rows(
            f"SELECT origin, seq FROM {self._table('cluster_events')}"
            " WHERE at < %s ALLOW FILTERING",
            [before],
        )
        for origin, seq in rows:
            await self._driver.rows(
                f"DELETE FROM {self._table('cluster_events')} WHERE origin = %s AND seq = %s",
                [origin, seq],
            )
        return len(rows)
