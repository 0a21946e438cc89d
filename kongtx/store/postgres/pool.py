# -*- test-case-name: tests.store.test_postgres_specific -*-
"""Our small txpostgres connection pool: TLS settings, timeouts, retries, and constraint errors.

Why our own pool instead of ``txpostgres.ConnectionPool``: that class takes its
reactor as a class attribute (STYLE.md rule 16), and its cancellation calls
psycopg2's blocking ``connection.cancel()``, which would freeze the reactor thread
against a hung server.  Here each :class:`txpostgres.txpostgres.Connection` gets the
injected reactor, every statement runs under a timeout on the injected
:class:`~kongtx.clock.Clock`, and a connection that timed out or failed is closed and
forgotten rather than cancelled: the server rolls its transaction back when the
socket goes.  New connections are opened on demand, so the pool reconnects by itself
when the server comes back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionClosed
from twisted.python.failure import Failure
from txpostgres import txpostgres

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.common import within
from kongtx.store.interface import (
    ForeignKeyViolation,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)

T = TypeVar("T")

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)")
#: SQLSTATEs that mean the connection (or the server) is gone, not that the query is wrong.
_CONNECTION_CLASSES = ("08", "57", "53")


def ssl_settings(ssl: bool, ssl_verify: bool, ssl_ca: str | None) -> dict[str, str]:
    """libpq's ``sslmode`` (and ``sslrootcert``) for pg_ssl / pg_ssl_verify.

    Verification is Kong 0.9's (pgmoon's ``sslhandshake(false, nil, ssl_verify)``):
    the certificate chain against the CA file, not the server's name, so
    ``verify-ca``; the CA is ``lua_ssl_trusted_certificate`` only, never libpq's
    ``~/.postgresql/root.crt``.  Without verification no ``sslrootcert`` is given,
    since libpq turns ``require`` into ``verify-ca`` when it finds one.
    """
    if not ssl:
        return {"sslmode": "disable"}
    if not ssl_verify:
        return {"sslmode": "require"}
    if not ssl_ca:
        raise ValueError("pg_ssl_verify needs a CA file (lua_ssl_trusted_certificate)")
    return {"sslmode": "verify-ca", "sslrootcert": ssl_ca}


class _Gone(Exception):
    """The connection died under a statement (wrapped so callers may retry once)."""

    def __init__(self, cause: BaseException, first: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.first = first


class Txn:
    """One transaction on one pooled connection: ``execute`` with a timeout."""

    def __init__(self, pool: PgPool, conn: Any, timeout: float) -> None:
        self._pool = pool
        self.conn = conn
        self.timeout = timeout
        self.statements = 0
        self.rowcount = -1

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (``[]`` when it returns none)."""
        first = self.statements == 0
        self.statements += 1
        try:
            cursor = self.conn.cursor()
            d = cursor.execute(sql, params)
        except (psycopg2.InterfaceError, psycopg2.OperationalError) as e:
            raise _Gone(e, first) from e
        try:
            await self._pool.timed(d, self.conn, self.timeout)
        except (psycopg2.InterfaceError, psycopg2.OperationalError, ConnectionClosed) as e:
            raise _Gone(e, first) from e
        except psycopg2.Error as e:
            if (e.pgcode or "")[:2] in _CONNECTION_CLASSES:
                raise _Gone(e, first) from e
            raise
        self.rowcount = cursor.rowcount
        if cursor.description is None:
            return []
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


class PgPool:
    """Up to ``size`` txpostgres connections to ``dsn``, each statement under ``timeout``.

    ``run(body)`` runs ``body(txn)`` in one transaction on one connection, maps
    errors to store errors and retries once on a connection the server closed while
    it sat idle.
    """

    log = logger()

    def __init__(
        self, dsn: dict[str, Any], *, clock: Clock, reactor: Any, timeout: float, size: int
    ) -> None:
        self.dsn = dsn
        self.clock = clock
        self.reactor = reactor
        self.timeout = timeout
        self.size = size
        self.stopped = False
        self._idle: list[Any] = []
        self.open: set[Any] = set()
        self._waiters: list[Deferred[Any]] = []

    def timed(self, d: Deferred[Any], conn: Any, timeout: float) -> Deferred[Any]:
        """``d``'s result, or StoreUnavailable after ``timeout`` s (and ``conn`` is dropped).

        Never cancels ``d``: txpostgres' canceller calls psycopg2's blocking cancel.
        """
        message = f"PostgreSQL did not answer within {timeout:g}s"
        return within(self.clock, d, timeout, message, lambda: self.discard(conn))

    def discard(self, conn: Any) -> None:
        """Forget ``conn`` and close its socket (never cancel: that call blocks)."""
        if conn is None:
            return
        if conn in self._idle:
            self._idle.remove(conn)
        if conn in self.open:
            self.open.discard(conn)
            try:
                conn.close()
            except Exception:
                self.log.debug("closing a dead PostgreSQL connection failed", log_failure=Failure())
        self._wake()

    def _wake(self) -> None:
        """A slot was freed: let the oldest waiter open a connection."""
        if self._waiters and len(self.open) < self.size:
            waiter = self._waiters.pop(0)
            if not waiter.called:
                waiter.callback(None)

    def _release(self, conn: Any) -> None:
        if conn not in self.open:
            return
        if conn.closed:
            self.discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.called:
                waiter.callback(conn)
                return
        self._idle.append(conn)

    async def address(self) -> dict[str, Any]:
        """The DSN with ``hostaddr`` resolved off the reactor thread.

        libpq would otherwise resolve a host name synchronously inside the async connect
        and stall the reactor; ``host`` stays for TLS verification.
        """
        host = self.dsn["host"]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host.startswith("/"):
                return self.dsn  # a unix socket directory
            try:
                ip = await self.timed(self.reactor.resolve(host), None, self.timeout)
            except StoreUnavailable:
                raise
            except Exception as e:
                raise StoreUnavailable(f"cannot resolve PostgreSQL host {host!r}: {e}") from e
            return {**self.dsn, "hostaddr": ip}
        return self.dsn

    async def _connect(self) -> Any:
        dsn = await self.address()
        conn = txpostgres.Connection(reactor=self.reactor)
        self.open.add(conn)
        try:
            d = conn.connect(**dsn)
            await self.timed(d, conn, self.timeout)
        except StoreUnavailable:
            raise
        except CancelledError:
            self.discard(conn)
            raise
        except Exception as e:
            self.discard(conn)
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {str(e).strip()}") from e
        return conn

    async def _acquire(self) -> tuple[Any, bool]:
        """A connection and whether it was reused (a reused one may have died meanwhile)."""
        if self.stopped:
            raise StoreUnavailable("the PostgreSQL store is stopped")
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
            self.discard(conn)
        if len(self.open) < self.size:
            return await self._connect(), False
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        try:
            conn = await self.timed(waiter, None, self.timeout)
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if conn is None:
            return await self._connect(), False
        return conn, True

    async def run(self, body: Callable[[Txn], Awaitable[T]], limit: float | None = None) -> T:
        """Run ``body`` in one transaction; map errors; retry once on a stale connection."""
        for _attempt in range(self.size + 1):
            conn, reused = await self._acquire()
            txn = Txn(self, conn, limit or self.timeout)
            try:
                await txn.execute("BEGIN")
                result = await body(txn)
                await txn.execute("COMMIT")
            except _Gone as e:
                self.discard(conn)
                if e.first and reused:
                    continue  # an idle connection the server closed meanwhile
                raise StoreUnavailable(f"lost the PostgreSQL connection: {e}") from e.cause
            except (StoreUnavailable, CancelledError):
                self.discard(conn)
                raise
            except psycopg2.IntegrityError as e:
                await self._rollback(txn)
                raise constraint_error(e) from e
            except BaseException:
                await self._rollback(txn)
                raise
            self._release(conn)
            return result
        raise StoreUnavailable("no usable PostgreSQL connection")

    async def _rollback(self, txn: Txn) -> None:
        try:
            await txn.execute("ROLLBACK")
        except Exception:
            self.discard(txn.conn)
        else:
            self._release(txn.conn)

    def close(self) -> None:
        """Stop: fail every waiter and close every connection."""
        self.stopped = True
        for waiter in self._waiters:
            if not waiter.called:
                waiter.errback(Failure(StoreUnavailable("the PostgreSQL store is stopping")))
        self._waiters = []
        for conn in list(self.open):
            self.discard(conn)


def constraint_error(e: psycopg2.IntegrityError) -> StoreError:
    """UniqueViolation / ForeignKeyViolation from the server's own message."""
    detail = getattr(e.diag, "message_detail", None) or ""
    match = _KEY_DETAIL.search(detail)
    if match:
        cols = match["cols"].replace('"', "")
        value: Any = match["vals"]
        if e.pgcode == "23505":
            return UniqueViolation(cols, value)
        if e.pgcode == "23503":
            return ForeignKeyViolation(cols.split(",")[0].strip(), value)
    if "violates foreign key constraint" in str(e):
        return ForeignKeyViolation(getattr(e.diag, "constraint_name", "") or "?", "")
    return StoreError(str(e).strip())
