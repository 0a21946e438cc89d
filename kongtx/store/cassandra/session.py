# -*- test-case-name: tests.store.test_cassandra_specific,tests.unit.test_cassandra_reconnect -*-
"""The driver plumbing: cassandra-driver's own I/O thread, results handed to our reactor.

Why not the driver's ``TwistedConnection``: it is deprecated since 3.30 (removal planned
for 3.31), it imports and may even *run* the global reactor itself, and it cannot be
given our injected one.  Instead the driver keeps its default event loop (libev when
available, which the manylinux wheels bundle, else asyncore/asyncio) in its own thread,
and every ``ResponseFuture`` hands its outcome to our reactor with
``reactor.callFromThread``.  The few blocking driver calls (connect, set_keyspace,
shutdown) run in the reactor's thread pool.  Each request also has a timeout on the
injected :class:`~kongtx.clock.Clock`, so a hung server gives :class:`StoreUnavailable`
on time whatever the driver does.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.store.common import within
from kongtx.store.interface import StoreError, StoreUnavailable

T = TypeVar("T")

#: The longest wait (s) between the driver's attempts to reach a down host.
RECONNECT_MAX_DELAY = 10.0


def _driver_unavailable(error: BaseException) -> bool:
    from cassandra import (
        OperationTimedOut,
        ReadFailure,
        ReadTimeout,
        Unavailable,
        WriteFailure,
        WriteTimeout,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return isinstance(
        error,
        NoHostAvailable
        | OperationTimedOut
        | Unavailable
        | ReadTimeout
        | WriteTimeout
        | ReadFailure
        | WriteFailure
        | ConnectionException
        | OSError,
    )


def ssl_context(verify: bool, ca_file: str | None) -> _ssl.SSLContext:
    """The client TLS context for cassandra_ssl (and cassandra_ssl_verify).

    Verification is Kong 0.9's: lua-cassandra called ``sslhandshake(false, nil,
    verify)``, so nginx checked the certificate chain against
    ``lua_ssl_trusted_certificate`` (and no other store) but not the node's name;
    here CERT_REQUIRED against ``ca_file`` only, without hostname checking.  The
    chain depth is OpenSSL's default (``lua_ssl_verify_depth`` is not applied: the
    ssl module does not expose it).  Without verification nothing is checked.
    """
    context = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if not verify:
        context.verify_mode = _ssl.CERT_NONE
        return context
    if not ca_file:
        raise ValueError("cassandra_ssl_verify needs a CA file (lua_ssl_trusted_certificate)")
    context.verify_mode = _ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=ca_file)
    return context


class CassandraSession:
    """One driver ``Cluster`` and ``Session``: connect, run requests, shut down.

    ``timeout`` (seconds) bounds connecting and every request unless a request
    names its own ``limit``.
    """

    def __init__(
        self,
        *,
        contact_points: list[str],
        port: int,
        keyspace: str,
        consistency: int,
        timeout: float,
        ssl: bool,
        ssl_verify: bool,
        ssl_ca: str | None = None,
        username: str | None,
        password: str | None,
        protocol_version: int,
        clock: Clock,
        reactor: Any,
    ) -> None:
        self.contact_points = contact_points
        self.port = port
        self.keyspace = keyspace
        self.consistency = consistency
        self.timeout = timeout
        self._ssl = ssl
        self._ssl_verify = ssl_verify
        #: the CA file verification trusts (lua_ssl_trusted_certificate)
        self.ssl_ca = ssl_ca
        self._username = username
        self._password = password
        self._protocol_version = protocol_version
        self.clock = clock
        self.reactor = reactor
        self.cluster: Any = None
        self.session: Any = None

    def in_thread(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a blocking driver call in the reactor's thread pool."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def connect_blocking(self) -> tuple[Any, Any]:
        """A connected (cluster, session); blocks, so run it through :meth:`in_thread`."""
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            TokenAwarePolicy,
        )

        kwargs: dict[str, Any] = {
            "contact_points": self.contact_points,
            "port": self.port,
            "protocol_version": self._protocol_version,
            "connect_timeout": self.timeout,
            "control_connection_timeout": self.timeout,
            # The driver's default backs off up to 600 s between attempts to reach a
            # down host, so after a long outage the node could stay unavailable for
            # minutes once the server is back; capped, it reconnects within seconds.
            # It also gives up after 64 attempts: never, here (the node cannot restart
            # its own driver, and an operator expects it to come back by itself).
            "reconnection_policy": ExponentialReconnectionPolicy(
                base_delay=1.0, max_delay=RECONNECT_MAX_DELAY, max_attempts=None
            ),
            "execution_profiles": {
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                    request_timeout=self.timeout,
                    consistency_level=self.consistency,
                )
            },
        }
        if self._username and self._password:
            kwargs["auth_provider"] = PlainTextAuthProvider(self._username, self._password)
        if self._ssl:
            kwargs["ssl_context"] = ssl_context(self._ssl_verify, self.ssl_ca)
        cluster = Cluster(**kwargs)
        try:
            session = cluster.connect()
        except BaseException:
            cluster.shutdown()
            raise
        if self.keyspace in cluster.metadata.keyspaces:
            session.set_keyspace(self.keyspace)
        return cluster, session

    @property
    def connected(self) -> bool:
        return self.session is not None

    async def start(self) -> None:
        """Connect (in the thread pool: the driver's connect blocks)."""
        if self.session is not None:
            return
        try:
            self.cluster, self.session = await self.in_thread(self.connect_blocking)
        except Exception as e:
            raise StoreUnavailable(f"cannot connect to Cassandra: {e}") from e

    async def stop(self) -> None:
        """Shut the driver down (its I/O thread and connections)."""
        cluster, self.cluster, self.session = self.cluster, None, None
        if cluster is not None:
            await self.in_thread(cluster.shutdown)

    async def use_keyspace(self) -> None:
        """``USE`` the keyspace (once migrations created it)."""
        await self.in_thread(self.session.set_keyspace, self.keyspace)

    async def execute(
        self,
        cql: str,
        params: Sequence[Any] | None = None,
        *,
        fetch_size: int | None = None,
        paging_state: bytes | None = None,
        limit: float | None = None,
    ) -> tuple[list[tuple[Any, ...]], bytes | None]:
        """One request; returns (rows of this page, paging state of the next or None)."""
        from cassandra.query import SimpleStatement

        if self.session is None:
            raise StoreUnavailable("the Cassandra store is not started")
        timeout = limit or self.timeout
        statement = SimpleStatement(cql, consistency_level=self.consistency, fetch_size=fetch_size)
        answer: Deferred[tuple[list[tuple[Any, ...]], bytes | None]] = Deferred()

        def ok(_rows: Any, future: Any) -> None:
            try:
                rs = future.result()
                outcome: Any = (list(rs.current_rows), rs.paging_state)
            except BaseException as e:
                outcome = Failure(e)
            self.reactor.callFromThread(deliver, outcome)

        def failed(error: BaseException) -> None:
            self.reactor.callFromThread(deliver, Failure(error))

        def deliver(outcome: Any) -> None:
            if answer.called:
                return
            if isinstance(outcome, Failure):
                answer.errback(outcome)
            else:
                answer.callback(outcome)

        message = f"Cassandra did not answer within {timeout:g}s"
        result = within(self.clock, answer, timeout + 0.5, message)
        try:
            future = self.session.execute_async(
                statement, params, timeout=timeout, paging_state=paging_state
            )
            future.add_callbacks(ok, failed, callback_args=(future,))
        except BaseException as e:
            deliver(Failure(e))
        try:
            return await result
        except StoreError:
            raise
        except Exception as e:
            if _driver_unavailable(e):
                raise StoreUnavailable(f"Cassandra unavailable: {e}") from e
            raise

    async def rows(
        self, cql: str, params: Sequence[Any] | None = None, *, limit: float | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of one request (its first page)."""
        rows, _ = await self.execute(cql, params, limit=limit)
        return rows
