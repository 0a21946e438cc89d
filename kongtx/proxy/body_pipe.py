# -*- test-case-name: tests.unit.test_strict_http -*-
"""What both proxy front-ends share without twisted.web: a streamed request body, error bytes.

:class:`BodyPipe` carries a request body from the client to the upstream as it
arrives (the fast front-end and twisted.web's :class:`~kongtx.proxy.http.ProxyRequest`
both feed one); :func:`error_bytes` is the whole response either front-end writes
before closing a connection it refuses.  They live apart from
:mod:`kongtx.proxy.http` so that a worker serving the fast front-end never imports
twisted.web's server (about 2.8 MB per process, docs/benchmarks.md).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from kongtx import SERVER_NAME

_REASONS = {
    400: b"Bad Request",
    414: b"Request-URI Too Large",
    431: b"Request Header Fields Too Large",
}
_BODIES = {
    400: b"Bad request",
    414: b"URI too long",
    431: b"Request header fields too large",
}


def error_bytes(status: int) -> bytes:
    """The whole response the channel writes before closing."""
    body = _BODIES[status]
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Server: %s\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s"
    ) % (status, _REASONS[status], SERVER_NAME.encode("ascii"), len(body), body)


class BodyPipe:
    """A request body on its way from the client to the upstream, as it arrives.

    The upstream client consumes it as a push producer (``startProducing``...;
    ``length`` is the client's Content-Length, or ``UNKNOWN_LENGTH`` for a chunked
    body).  When the upstream reads slower than the client sends, the client
    connection stops being read (above ``HIGH`` buffered bytes) until it drains.
    A plugin that needs the whole body uses :meth:`read_all` before anything is sent.
    """

    HIGH = 256 * 1024
    LOW = 64 * 1024

    def __init__(self, length: int | None, channel: Any) -> None:
        self.length: Any = UNKNOWN_LENGTH if length is None else length
        self.declared_length = length
        self._channel = channel
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.received = 0
        self.complete = False
        self.failure: Failure | None = None
        self._consumer: IConsumer | None = None
        self._paused = False
        self._done: Deferred[None] | None = None
        self._client_paused = False
        self._waiters: list[Deferred[None]] = []
        self._abandoned = False
        #: called after each chunk written upstream (the send timeout)
        self.on_progress: Any = None

    # ---------------------------------------------------------- client side

    def write(self, data: bytes) -> None:
        if self._abandoned:
            return
        self.received += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        self._pump()
        if self._buffered > self.HIGH and not self._client_paused:
            transport = getattr(self._channel, "transport", None)
            if transport is not None:
                self._client_paused = True
                transport.pauseProducing()

    def finish(self) -> None:
        self.complete = True
        self._pump()
        self._wake()

    def fail(self, reason: Failure) -> None:
        """The client went away before the body was complete."""
        if self.complete or self.failure is not None:
            return
        self.failure = reason
        done, self._done = self._done, None
        if done is not None and not done.called:
            done.errback(reason)
        self._wake()

    def abandon(self) -> None:
        """Nobody will read the rest (the response is already out): drop it."""
        self._abandoned = True
        self._chunks.clear()
        self._buffered = 0
        self._resume_client()

    # ---------------------------------------------------------- upstream side

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        done = self._done
        if self.failure is not None:
            done.errback(self.failure)
            return done
        self._pump()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._pump()

    def stopProducing(self) -> None:
        self._consumer = None
        self.abandon()

    def _pump(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            while self._chunks and not self._paused:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                consumer.write(data)
                if self.on_progress is not None:
                    self.on_progress()
            done = self._done
            if self.complete and not self._chunks and done is not None and not done.called:
                self._done = None
                done.callback(None)
        if self._buffered < self.LOW:
            self._resume_client()

    def _resume_client(self) -> None:
        if self._client_paused:
            self._client_paused = False
            transport = getattr(self._channel, "transport", None)
            if transport is not None:
                transport.resumeProducing()

    # ---------------------------------------------------------- plugins

    async def read_all(self) -> bytes:
        """The whole body, once the client sent it all (buffers it in memory)."""
        while not self.complete:
            if self.failure is not None:
                raise ConnectionError("the client went away before sending the whole body")
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            self._resume_client()
            # nobody consumes yet: let the client fill the buffer past HIGH
            self._client_paused = False
            await waiter
        data = b"".join(self._chunks)
        return data

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)
