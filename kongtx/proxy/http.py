# -*- test-case-name: tests.unit.test_strict_http -*-
"""A strict HTTP/1.1 server channel for the proxy (request smuggling defence).

A proxy that reads a request's framing differently from its upstream lets a client
hide a second request inside the first.  So the proxy refuses every ambiguous
request outright, answers with an error and closes the connection; nothing of it
reaches an upstream (SPEC's table: "strict HTTP parsing").

What Twisted 26's ``HTTPChannel`` already rejects with 400 + close (checked in
tests/unit/test_strict_http.py): Content-Length together with Transfer-Encoding,
any repeated Content-Length, a Content-Length that is not plain digits (signs, hex,
spaces, garbage), a Transfer-Encoding other than ``chunked``/``identity``, chunk
sizes that are not plain hex (``0x``, signs, trailing junk), invalid header names
(space before the colon), NUL/CR/LF in header values, malformed request lines.

What this subclass adds:

* obs-fold (a header line starting with space or tab) -> 400, where Twisted
  silently joined it to the previous header;
* ``Transfer-Encoding: identity`` (dropped from HTTP/1.1 by RFC 7230, and which
  Twisted ignores, letting a later Content-Length frame the body) -> 400;
* Transfer-Encoding in an HTTP/1.0 request -> 400 (RFC 7230 §3.3.1);
* a chunk size of more than 16 hex digits (would overflow a 64-bit length in
  other parsers) -> 400;
* the whole header block is bounded by ``client_max_header_size``: a request
  line alone over it -> 414, the headers -> 431; then close.

Error responses carry ``Server: kong/0.9.9`` and ``Connection: close``.

Request bodies: twisted.web reads a whole body before it lets anyone see the
request.  :class:`ProxyRequest` instead starts the proxy as soon as the headers are
in when the body is large (over ``stream_threshold``) or chunked, and hands the body
over through a :class:`BodyPipe` as it arrives, so an upload streams to the upstream
(with backpressure both ways) instead of landing in a temporary file first.  A
response finished before its request body was fully read closes the connection:
the rest of that body is never parsed as a next request.
"""

from __future__ import annotations

from collections import deque
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.iweb import UNKNOWN_LENGTH

from kongtx import SERVER_NAME
from kongtx.http.site import RawBodyRequest, TrackingChannel, TrackingSite

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

#: nginx caps a chunk size at what fits an off_t; 16 hex digits is 64 bits.
MAX_CHUNK_SIZE_DIGITS = 16


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


class _StrictChunkedDecoder(http._ChunkedTransferDecoder):
    """Twisted's chunked decoder, refusing absurdly long chunk sizes."""

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        eol = self._buffer.find(b"\r\n", self._start)
        end = eol if eol >= 0 else len(self._buffer)
        semi = self._buffer.find(b";", 0, end)
        size = self._buffer[: semi if semi >= 0 else end]
        if len(size.lstrip(b"0")) > MAX_CHUNK_SIZE_DIGITS:
            raise http._MalformedChunkedDataError("chunk size too large")
        result: bool = super()._dataReceived_CHUNK_LENGTH()
        return result


class StrictHTTPChannel(TrackingChannel):
    """``HTTPChannel`` with the extra refusals listed in the module docstring."""

    #: The header block limit; the factory sets it from ``client_max_header_size``.
    max_header_size = 8192
    _rejected = False
    _block_size = 0
    #: nginx's ``$connection`` / ``$connection_requests`` (correlation-id's tracker).
    connection_id = 0
    requests_served = 0

    def __init__(self) -> None:
        super().__init__()
        # Our own limit applies first; Twisted's must never fire before it.
        self.totalHeadersSize = 2**31
        self.MAX_LENGTH = self.max_header_size + 2

    def connectionMade(self) -> None:
        site = getattr(self, "site", None)
        limit = getattr(site, "max_header_size", None)
        if isinstance(limit, int) and limit > 0:
            self.max_header_size = limit
            self.MAX_LENGTH = limit + 2
        if isinstance(site, ProxySite):
            site.connections_made += 1
            self.connection_id = site.connections_made
        super().connectionMade()

    @property
    def _in_first_line(self) -> bool:
        return bool(getattr(self, "_HTTPChannel__first_line", 1))

    def reject(self, status: int) -> None:
        """Answer ``status`` and close; later bytes on this connection are ignored."""
        if self._rejected:
            return
        self._rejected = True
        self.persistent = False
        if self.transport is not None:
            self.transport.write(error_bytes(status))
            self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reject(400)

    def discard_input(self) -> None:
        """Read nothing more from this connection (it closes after the response)."""
        self._rejected = True
        self.persistent = False

    def dataReceived(self, data: bytes) -> None:
        if self._rejected:
            return
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(414 if self._in_first_line else 431)

    def lineReceived(self, line: bytes) -> None:
        if self._rejected:
            return
        first = self._in_first_line
        if first:
            self._block_size = 0
        self._block_size += len(line) + 2
        if self._block_size > self.max_header_size:
            self.reject(414 if first else 431)
            return
        if not first and line and line[:1] in (b" ", b"\t"):
            # obs-fold: a continuation line some parsers join and others split.
            self.reject(400)
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self._rejected:
            return False
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"transfer-encoding":
            if (
                value.strip(b" \t").lower() != b"chunked"
                or getattr(self, "_version", b"HTTP/1.1") != b"HTTP/1.1"
            ):
                self.reject(400)
                return False
        ok: bool = super().headerReceived(line)
        decoder = self._transferDecoder
        if ok and type(decoder) is http._ChunkedTransferDecoder:
            strict = _StrictChunkedDecoder(decoder.dataCallback, decoder.finishCallback)
            self._transferDecoder = strict
        return ok


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


class ProxyRequest(RawBodyRequest):
    """A twisted.web request that can start before its body is complete.

    Used for bodies over the site's ``stream_threshold`` and chunked bodies; smaller
    ones are read whole first, which costs nothing and keeps them replayable.
    """

    body_pipe: BodyPipe | None = None

    def gotLength(self, length: int | None) -> None:
        channel: Any = self.channel
        site = getattr(channel, "site", None)
        threshold = getattr(site, "stream_threshold", None)
        clock = getattr(site, "clock", None)
        if clock is None or threshold is None or (length is not None and length <= threshold):
            super().gotLength(length)
            return
        self.content = BytesIO()
        self.body_pipe = BodyPipe(length, channel)
        start = (channel._command, channel._path, channel._version)
        # Not from here: the channel is still inside its header handling (and may
        # owe the client a "100 Continue"); the next reactor turn is soon enough.
        clock.call_later(0, self._start_early, *start)

    def _start_early(self, command: bytes, path: bytes, version: bytes) -> None:
        if getattr(self, "_disconnected", False) or self.finished:
            return
        server.Request.requestReceived(self, command, path, version)

    def handleContentChunk(self, data: bytes) -> None:
        pipe = self.body_pipe
        if pipe is None:
            super().handleContentChunk(data)
        else:
            pipe.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        pipe = self.body_pipe
        if pipe is None:
            super().requestReceived(command, path, version)
        else:
            pipe.finish()  # processing started (or starts) in _start_early

    def write(self, data: bytes) -> None:
        pipe = self.body_pipe
        if not self.startedWriting and pipe is not None and not pipe.complete:
            # Answering before the whole body arrived: this connection ends here.
            self.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            channel: Any = self.channel
            discard = getattr(channel, "discard_input", None)
            if discard is not None:
                discard()
            pipe.abandon()
        super().write(data)

    def connectionLost(self, reason: Failure) -> None:
        pipe = self.body_pipe
        if pipe is not None:
            pipe.fail(reason)
        super().connectionLost(reason)


class ProxySite(TrackingSite):
    """The proxy's ``Site``: strict channels, no Twisted banner, header size bound.

    With a ``clock``, bodies over ``stream_threshold`` bytes (and chunked ones) are
    streamed to the upstream as they arrive (:class:`ProxyRequest`).
    """

    protocol = StrictHTTPChannel
    requestFactory = ProxyRequest

    def __init__(
        self,
        resource: Any,
        max_header_size: int = 8192,
        clock: Any = None,
        stream_threshold: int = 64 * 1024,
        **kw: Any,
    ) -> None:
        super().__init__(resource, **kw)
        self.requestFactory = ProxyRequest
        self.clock = clock
        self.stream_threshold = stream_threshold
        self.max_header_size = max_header_size
        self.connections_made = 0
        self.displayTracebacks = False
        # twisted.web's access log is not ours to write (log plugins do that).
        self.noisy = False

    def log(self, request: Any) -> None:
        """No Twisted access-log line per proxied request (the hot path)."""
