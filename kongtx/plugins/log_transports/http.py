# -*- test-case-name: tests.unit.test_log_transports -*-
"""http-log, runscope, galileo: hand-written HTTP/1.1 requests on keep-alive connections."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.plugins.log_transports.common import MAX_QUEUE, Counted, LogDropped

__all__ = ["HttpSender"]


class _HttpConnection(Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.waiting: Deferred[int] | None = None
        self.lost = False
        self._status = 0
        self._keep_alive = True
        self._parser = httptools.HttpResponseParser(self)

    def request(self, data: bytes) -> Deferred[int]:
        self.waiting = Deferred()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(LogDropped(f"bad response: {e}"))
            self.transport.abortConnection()  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        d, self.waiting = self.waiting, None
        if not self._keep_alive:
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.lost = True
        if d is not None:
            d.callback(self._status)

    def _fail(self, error: Exception) -> None:
        d, self.waiting = self.waiting, None
        if d is not None:
            d.errback(Failure(error))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.lost = True
        self._fail(LogDropped(f"connection lost: {reason.getErrorMessage()}"))


class HttpSender(Counted):
    """POSTs (or PUT/PATCH) of JSON bodies to one URL, on keep-alive connections."""

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        url: str,
        timeout: float,
        keepalive: float,
        connections: int = 4,
        max_queue: int = MAX_QUEUE,
        verify: bool = False,
    ) -> None:
        super().__init__()
        parts = urlsplit(url)
        self.reactor = reactor
        self.clock = clock
        self.url = url
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.keepalive = keepalive
        self.max_connections = connections
        self.max_queue = max_queue
        self.verify = verify
        self.queue: deque[tuple[bytes, Deferred[int]]] = deque()
        self.busy = 0
        self._idle: list[tuple[_HttpConnection, IDelayedCall]] = []

    def __repr__(self) -> str:
        return f"<HttpSender {self.url}>"

    def request_bytes(
        self, method: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Kong's hand-written request: Host, Connection, Content-Type, Content-Length."""
        head = (
            f"{method} {self.target} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Connection: Keep-Alive\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        return head.encode("latin-1") + b"\r\n" + body

    def send(self, data: bytes) -> Deferred[int]:
        """Queue one whole request; fires with the response status or fails with LogDropped.

        The caller need not wait: a failure is counted and logged here.
        """
        d: Deferred[int] = Deferred()
        if len(self.queue) >= self.max_queue:
            self._drop("queue full")
            d.errback(Failure(LogDropped("queue full")))
            return d
        self.queue.append((data, d))
        self._pump()
        return d

    def _pump(self) -> None:
        while self.queue and self.busy < self.max_connections:
            data, d = self.queue.popleft()
            self.busy += 1
            Deferred.fromCoroutine(self._deliver(data, d))

    async def _deliver(self, data: bytes, d: Deferred[int]) -> None:
        expired: list[bool] = []
        work: Deferred[tuple[_HttpConnection, int]] = Deferred.fromCoroutine(self._exchange(data))

        def give_up() -> None:
            expired.append(True)
            work.cancel()

        timer = self.clock.call_later(self.timeout, give_up)
        try:
            conn, status = await work
        except Exception as e:
            why = "timeout" if expired else str(e)
            self._drop(f"{self.url}: {why}")
            d.errback(Failure(LogDropped(why)))
        else:
            self.sent += 1
            if not conn.lost:
                self._release(conn)
            d.callback(status)
        finally:
            if timer.active():
                timer.cancel()
            self.busy -= 1
            self._pump()

    async def _exchange(self, data: bytes) -> tuple[_HttpConnection, int]:
        conn = await self._connection()
        try:
            status = await conn.request(data)
        except CancelledError:
            conn.transport.abortConnection()  # type: ignore[union-attr]
            raise
        return conn, status

    async def _connection(self) -> _HttpConnection:
        while self._idle:
            conn, expiry = self._idle.pop()
            if expiry.active():
                expiry.cancel()
            if not conn.lost:
                return conn
        if self.https:
            options = (
                ssl.optionsForClientTLS(self.host)
                if self.verify
                else ssl.CertificateOptions(verify=False)
            )
            endpoint: Any = SSL4ClientEndpoint(
                self.reactor, self.host, self.port, options, timeout=self.timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        fresh: _HttpConnection = await connectProtocol(endpoint, _HttpConnection())
        return fresh

    def _release(self, conn: _HttpConnection) -> None:
        def expire() -> None:
            self._idle = [(c, t) for c, t in self._idle if c is not conn]
            conn.transport.loseConnection()  # type: ignore[union-attr]

        self._idle.append((conn, self.clock.call_later(self.keepalive, expire)))

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, expiry in idle:
            if expiry.active():
                expiry.cancel()
            conn.transport.loseConnection()  # type: ignore[union-attr]
