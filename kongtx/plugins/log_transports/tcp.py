# -*- test-case-name: tests.unit.test_log_transports -*-
"""tcp-log: one pooled keep-alive connection per receiver, paused by TCP's back-pressure."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.plugins.log_transports.common import MAX_QUEUE, Counted, log

__all__ = ["RETRY_SECONDS", "TcpSender"]

#: how long a failed receiver is left alone before the next try
RETRY_SECONDS = 1.0


@implementer(IPushProducer)
class _TcpConnection(Protocol):
    def __init__(self, sender: TcpSender) -> None:
        self.sender = sender
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.sender._flush()

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        """A log receiver has nothing to say; whatever it sends is ignored."""

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.sender._lost(self, reason)


class TcpSender(Counted):
    """One keep-alive TCP connection to a log receiver, with a bounded queue."""

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        host: str,
        port: int,
        timeout: float,
        keepalive: float,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock = clock
        self.host = host
        self.port = port
        self.timeout = timeout
        self.keepalive = keepalive
        self.max_queue = max_queue
        self.queue: deque[bytes] = deque()
        self._conn: _TcpConnection | None = None
        self._connecting = False
        self._idle: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<TcpSender {self.host}:{self.port}>"

    def send(self, data: bytes) -> None:
        conn = self._conn
        if conn is not None and not conn.paused and not self.queue:
            conn.transport.write(data)  # type: ignore[union-attr]
            self.sent += 1
            self._touch()
            return
        if len(self.queue) >= self.max_queue:
            self._drop("queue full")
            return
        self.queue.append(data)
        if conn is None:
            self._connect()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.keepalive)
        else:
            self._idle = self.clock.call_later(self.keepalive, self._close_idle)

    def _close_idle(self) -> None:
        self._idle = None
        if self._conn is not None:
            self._conn.transport.loseConnection()  # type: ignore[union-attr]

    def _connect(self) -> None:
        if self._connecting or (self._retry is not None and self._retry.active()):
            return
        self._connecting = True
        endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        d = connectProtocol(endpoint, _TcpConnection(self))
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, conn: _TcpConnection) -> None:
        self._connecting = False
        self._conn = conn
        self._flush()

    def _failed(self, reason: Failure) -> None:
        self._connecting = False
        log.warn(
            "tcp log receiver {host}:{port} unreachable: {why}",
            host=self.host,
            port=self.port,
            why=reason.getErrorMessage(),
        )
        self._retry = self.clock.call_later(RETRY_SECONDS, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self.queue:
            self._connect()

    def _flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        queue = self.queue
        while queue and not conn.paused:
            conn.transport.write(queue.popleft())  # type: ignore[union-attr]
            self.sent += 1
        self._touch()

    def _lost(self, conn: _TcpConnection, reason: Failure) -> None:
        if self._conn is conn:
            self._conn = None
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.queue:
            self._retry = self.clock.call_later(RETRY_SECONDS, self._retry_now)

    def close(self) -> None:
        for call in (self._idle, self._retry):
            if call is not None and call.active():
                call.cancel()
        if self._conn is not None:
            self._conn.transport.loseConnection()  # type: ignore[union-attr]
