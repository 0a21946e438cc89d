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

from io import BytesIO
from typing import Any

from twisted.python.failure import Failure
from twisted.web import http, server

from kongtx.http.site import RawBodyRequest, TrackingChannel, TrackingSite
from kongtx.proxy.body_pipe import BodyPipe, error_bytes

__all__ = ["BodyPipe", "ProxyRequest", "ProxySite", "StrictHTTPChannel", "error_bytes"]

#: nginx caps a chunk size at what fits an off_t; 16 hex digits is 64 bits.
MAX_CHUNK_SIZE_DIGITS = 16


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
