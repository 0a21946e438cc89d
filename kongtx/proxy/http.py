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
"""

from __future__ import annotations

from typing import Any

from twisted.web import http

from kongtx import SERVER_NAME
from kongtx.http.site import TrackingChannel, TrackingSite

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


class ProxySite(TrackingSite):
    """The proxy's ``Site``: strict channels, no Twisted banner, header size bound."""

    protocol = StrictHTTPChannel

    def __init__(self, resource: Any, max_header_size: int = 8192, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.max_header_size = max_header_size
        self.connections_made = 0
        self.displayTracebacks = False
        # twisted.web's access log is not ours to write (log plugins do that).
        self.noisy = False

    def log(self, request: Any) -> None:
        """No Twisted access-log line per proxied request (the hot path)."""
