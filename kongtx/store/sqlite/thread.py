# -*- test-case-name: tests.store.test_sqlite_specific -*-
"""The store's one thread and the connection that lives on it.

Why one thread: a sqlite connection belongs to the thread that opened it, and the
reactor thread must never wait on disk or on another process's lock; so every query
runs on a private ``ThreadPool(1, 1)`` through ``deferToThreadPool`` and the
coroutine awaits it, under a timeout on the injected Clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from kongtx.clock import Clock
from kongtx.store.interface import StoreError, StoreUnavailable

T = TypeVar("T")


class SqliteThread:
    """A ``ThreadPool(1, 1)`` holding one connection to ``path`` (WAL, foreign keys on).

    Args:
        path: the database file (created if missing).
        name: the thread's name.
        clock: timeouts run on it.
        reactor: where results are delivered (``callFromThread``).
        timeout: seconds a write waits for another connection's lock (busy_timeout).
        query_timeout: seconds a timed call may take before StoreUnavailable.
    """

    def __init__(
        self,
        path: str,
        name: str,
        clock: Clock,
        reactor: IReactorFromThreads,
        *,
        timeout: float,
        query_timeout: float,
    ) -> None:
        self.path = path
        self.name = name
        self.clock = clock
        self.reactor = reactor
        self.timeout = timeout
        self.query_timeout = query_timeout
        self._pool: ThreadPool | None = None
        # Touched only on the pool's thread.
        self._conn: sqlite3.Connection | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        """Start the thread (the connection opens with the first call)."""
        if self._pool is None:
            self._pool = ThreadPool(1, 1, name=self.name)
            self._pool.start()

    async def stop(self) -> None:
        """Close the connection on its thread, then stop the thread."""
        pool = self._pool
        if pool is None:
            return
        try:
            await deferToThreadPool(self.reactor, pool, self._close)
        finally:
            self._pool = None
            # The thread is idle now (the close ran last), so joining it does not wait.
            pool.stop()

    async def run(self, fn: Callable[..., T], *args: Any, timed: bool = True) -> T:
        """Run ``fn(connection, ...)`` on the thread; map sqlite errors to store errors.

        ``timed`` calls fail with StoreUnavailable after ``query_timeout`` on the
        Clock (a query stuck behind a hung disk or a long queue must not hang an
        Admin request); the thread's late answer is then dropped.  Migrations are
        not timed: they may legitimately wait for another node's.
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the sqlite store is not started")
        d = deferToThreadPool(self.reactor, pool, self._guarded, fn, *args)
        if not timed:
            return await d
        expired: list[bool] = []

        def give_up() -> None:
            expired.append(True)
            d.cancel()

        timer = self.clock.call_later(self.query_timeout, give_up)
        try:
            return await d
        except CancelledError:
            if expired:
                raise StoreUnavailable(
                    f"sqlite did not answer within {self.query_timeout} s"
                ) from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            conn = self._connection()
            return fn(conn, *args)
        except sqlite3.IntegrityError as e:
            raise StoreError(f"[sqlite error] {e}") from e
        except sqlite3.OperationalError as e:
            message = str(e)
            if message.startswith(("no such table", "no such column")):
                raise StoreError(f"[sqlite error] {message} (run `kong migrations up`)") from e
            raise StoreUnavailable(f"[sqlite error] {message}") from e
        except sqlite3.Error as e:
            raise StoreUnavailable(f"[sqlite error] {e}") from e

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                # busy_timeout first: switching to WAL takes a lock another process may hold.
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
