# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""The fast front-end's reading side: HTTP/1.1 requests parsed by httptools (llhttp).

Strictness is the same as :mod:`kongtx.proxy.http` (request smuggling): llhttp
refuses Content-Length with Transfer-Encoding, a repeated Content-Length,
non-digit lengths, bad chunk sizes (and any over 64 bits), obs-fold, bare LF,
NUL/CR/LF in values and malformed names; on top of it this module refuses any
Transfer-Encoding but a single ``chunked``, Transfer-Encoding in HTTP/1.0, and bounds the head by
``client_max_header_size`` (request line -> 414, headers -> 431).  A refusal is
answered (after the responses owed to earlier pipelined requests) with
``Connection: close`` and the connection is closed.

:class:`RequestReader` is the base of the connection
(:class:`kongtx.proxy.fast_connection.FastProxyProtocol`, through
:class:`kongtx.proxy.fast_writing.ResponseWriter`): it feeds the parser,
collects each request (:class:`ParsedRequest`) and its body (whole, or streaming
through a :class:`kongtx.proxy.http.BodyPipe`) into the queue the connection
serves, and refuses what it must not pass on.
"""

from __future__ import annotations

from collections import deque
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final

import httptools
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from kongtx.proxy.body_pipe import BodyPipe, error_bytes
from kongtx.proxy.context import IncomingRequest
from kongtx.proxy.headers import HEADER_NAMES, HeaderList, header_name

if TYPE_CHECKING:
    from kongtx.proxy.fast import FastProxyFactory

#: Parsed requests waiting behind the one being served before the client stops being read.
MAX_QUEUED = 32

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: the body chunks of a request that has none yet (shared, never appended to: most
#: requests have no body, and they make no list)
_NO_CHUNKS: Final[list[bytes]] = []


class _Refused(Exception):
    """A request the parser callbacks refuse (status 400, 414 or 431)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ParsedRequest(IncomingRequest):
    """One request as it is parsed, then served: the pipeline's
    :class:`~kongtx.proxy.context.IncomingRequest` itself (one object per request; the
    connection fills in the rest when it starts it)."""

    __slots__ = (
        "chunked",
        "chunks",
        "complete",
        "connection_headers",
        "content_length",
        "expect_continue",
        "head_exact",
        "head_size",
        "http10",
        "keep_alive",
        "pipe",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        # the method, the headers (as parsed: lower-case name, name, value) and the
        # body are filled in here; the rest of IncomingRequest when it is served
        super().__init__("", "", HeaderList(), "")
        self.url = b""
        self.chunks: list[bytes] = _NO_CHUNKS
        self.pipe: BodyPipe | None = None
        self.complete = False
        self.content_length: int | None = None
        #: a Transfer-Encoding (``chunked``: any other is refused) was received
        self.chunked = False
        #: a Connection, Proxy-Connection or Upgrade header was received (without one,
        #: an HTTP/1.1 request is kept alive and no upgrade: llhttp need not be asked)
        self.connection_headers = False
        self.keep_alive = True
        self.http10 = False
        self.upgrade = False
        self.expect_continue = False
        #: bytes received while the head is incomplete (a lower bound; -1 once complete)
        self.head_size = 0
        #: size of the request line and header lines parsed so far
        self.head_exact = 0


class RequestReader(Protocol):
    """The reading side of one fast front-end connection: parse, queue, refuse.

    The connection (the subclass) serves the queue, in :meth:`_serve_next`.
    """

    #: the factory that built this connection (``factory`` too, typed as Twisted's)
    owner: FastProxyFactory

    def __init__(self) -> None:
        self._parser: Any = None
        self._parsing: ParsedRequest | None = None
        self._queue: deque[ParsedRequest] = deque()
        #: the request being served (the connection sets it)
        self._serving: ParsedRequest | None = None
        self._lost = False
        self._closing = False
        self._refusal: int | None = None
        self._refusal_sent = False
        self._read_paused = False
        self._upgraded = False
        self._raw: bytes = b""
        #: the factory's settings, copied when the connection is made (a native read
        #: per request instead of an attribute lookup on the interpreted factory)
        self.max_header_size = 8192
        self.stream_threshold = 1024 * 1024

    def _serve_next(self) -> None:
        """Serve the queued requests in order, then a refusal: the connection's part
        (``FastProxyProtocol._serve_next``); the reader only calls it.

        A method, not an attribute annotation, so that mypyc (issue 8) dispatches the
        call to the subclass's method instead of reading an instance attribute.
        """
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        """Write to the client after what is queued (the writing side's part:
        ``ResponseWriter._send``); a method for mypyc, as :meth:`_serve_next`."""
        raise NotImplementedError

    def flush(self) -> None:
        """Send the queued writes now (the writing side's part: ``ResponseWriter.flush``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ reading

    def _feed(self, data: bytes) -> None:
        req = self._parsing
        if req is not None and req.head_size >= 0:
            req.head_size += len(data)
        parser = self._parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            # The rest is the tunnel's if the pipeline splices, else the next request.
            self._upgraded = True
            self._raw = data[offset:]
            self._pause_reading()
            self._serve_next()
            return
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._refuse(cause.status if isinstance(cause, _Refused) else 400)
            return
        except httptools.HttpParserError:
            self._refuse(400)
            return
        req = self._parsing
        if req is not None and req.head_size > self.max_header_size and parser is self._parser:
            # a head still incomplete and already too long (a slow or endless one)
            self._refuse(431 if req.method else 414)
            return
        if len(self._queue) > MAX_QUEUED:
            self._pause_reading()
        if self._serving is None and self._queue:
            self._serve_next()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        req = ParsedRequest()
        self._parsing = req

    def on_url(self, url: bytes) -> None:
        req = self._parsing
        assert req is not None
        req.url += url
        if len(req.url) + 14 > self.max_header_size:
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._parsing
        assert req is not None
        if not req.method:
            # the request line is complete: count it once, then each header line
            req.method = self._parser.get_method().decode("ascii")
            req.head_exact = len(req.method) + len(req.url) + 12
        req.head_exact += len(name) + len(value) + 4
        if req.head_exact > self.max_header_size:
            raise _Refused(431)
        known = HEADER_NAMES.get(name)
        sname, low = known if known is not None else header_name(name)
        svalue = value.decode("latin-1")
        if low == "transfer-encoding":
            if svalue.strip(" \t").lower() != "chunked" or req.chunked:
                raise _Refused(400)
            req.chunked = True
        elif low == "content-length":
            if not svalue.strip(" \t").isdigit() or req.content_length is not None:
                raise _Refused(400)
            req.content_length = int(svalue)
        elif low == "expect" and svalue.strip(" \t").lower() == "100-continue":
            req.expect_continue = True
        elif low == "connection" or low == "upgrade" or low == "proxy-connection":
            req.connection_headers = True
        req.headers._items.append((low, sname, svalue))

    def on_headers_complete(self) -> None:
        req = self._parsing
        assert req is not None
        parser = self._parser
        if not req.method:
            req.method = parser.get_method().decode("ascii")
            if len(req.method) + len(req.url) + 12 > self.max_header_size:
                raise _Refused(414)
        req.head_size = -1
        chunked = req.chunked
        if req.connection_headers or req.method == "CONNECT" or not parser.should_keep_alive():
            # (without a Connection or Proxy-Connection header llhttp keeps only HTTP/1.1
            # alive: that answer saves the version's text, formatted per call)
            version = parser.get_http_version()
            req.http10 = version == "1.0"
            if chunked and version != "1.1":
                raise _Refused(400)
            req.keep_alive = bool(parser.should_keep_alive())
            req.upgrade = bool(parser.should_upgrade())
        # else HTTP/1.1, and llhttp's answers are known: kept alive (no "close"), no
        # upgrade (neither an Upgrade header nor CONNECT); ParsedRequest's defaults
        length = req.content_length
        has_body = chunked or (length is not None and length > 0)
        idle = self._serving is None and not self._queue
        if req.expect_continue and has_body and not req.http10:
            if idle:
                self._send(CONTINUE_RESPONSE)
                req.expect_continue = False
        else:
            req.expect_continue = False
        if has_body and (
            chunked
            or (length is not None and length > self.stream_threshold)
            or req.expect_continue
        ):
            req.pipe = BodyPipe(None if chunked else length, self)
            self._enqueue(req)

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        assert req is not None
        if req.pipe is not None:
            req.pipe.write(body)
        elif req.chunks is _NO_CHUNKS:
            req.chunks = [body]
        else:
            req.chunks.append(body)

    def on_message_complete(self) -> None:
        req = self._parsing
        assert req is not None
        self._parsing = None
        req.complete = True
        if req.pipe is not None:
            req.pipe.finish()
            return
        if req.chunks:
            data = req.chunks[0] if len(req.chunks) == 1 else b"".join(req.chunks)
            req.chunks = _NO_CHUNKS
            req.body = BytesIO(data)
            req.content_length = len(data)
        self._enqueue(req)

    def _enqueue(self, req: ParsedRequest) -> None:
        # Served once the parser has taken all the bytes at hand: a malformed rest
        # (a bad chunk...) must refuse the request before anything goes upstream.
        self._queue.append(req)

    # ------------------------------------------------------------ refusals, flow

    def _refuse(self, status: int) -> None:
        """Stop reading; answer ``status`` once the requests before it are answered."""
        if self._refusal is not None:
            return
        self._refusal = status
        self._parsing = None
        if self._queue and not self._queue[-1].complete:
            self._queue.pop()  # the malformed request itself (its body went wrong)
        req = self._serving
        if req is not None and req.pipe is not None and not req.complete:
            # the refused bytes were that request's own body: it cannot be completed
            req.pipe.fail(Failure(ConnectionError("malformed request body")))
        if self._serving is None:
            self._serve_next()  # the complete requests before it first, then the refusal

    def _write_refusal(self) -> None:
        assert self._refusal is not None
        if self._refusal_sent:
            return
        self._refusal_sent = True
        self._closing = True
        transport: Any = self.transport
        self._send(error_bytes(self._refusal))
        self.flush()
        transport.loseConnection()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._lost:
            self._read_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _resume_reading(self) -> None:
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
