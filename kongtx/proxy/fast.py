# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""The fast proxy front-end: an HTTP/1.1 server protocol on httptools (llhttp).

twisted.web parses request lines and headers in Python, builds a ``Request``
with ``Headers`` that sanitise every name and value, and writes the response
through several layers; for a proxy that is most of the CPU per request
(docs/benchmarks.md).  This protocol lets llhttp (C) parse, hands the pipeline
(:class:`kongtx.proxy.pipeline.ProxyPipeline`) an :class:`IncomingRequest` and
is itself the pipeline's :class:`Downstream`, writing each response head in one
piece.  The pipeline, the plugins and the upstream client are the same as
behind ``ProxyResource`` (``proxy_frontend = web``).

Strictness is the same as :mod:`kongtx.proxy.http` (request smuggling): llhttp
refuses Content-Length with Transfer-Encoding, a repeated Content-Length,
non-digit lengths, bad chunk sizes (and any over 64 bits), obs-fold, bare LF,
NUL/CR/LF in values and malformed names; on top of it this module refuses any
Transfer-Encoding but a single ``chunked``, Transfer-Encoding in HTTP/1.0, and bounds the head by
``client_max_header_size`` (request line -> 414, headers -> 431).  A refusal is
answered (after the responses owed to earlier pipelined requests) with
``Connection: close`` and the connection is closed.

Requests are served one at a time per connection, in order; pipelined requests
are parsed ahead and queued (the client is no longer read while too many wait).
Bodies up to ``stream_threshold`` are read whole before the pipeline runs
(replayable on a stale pooled upstream connection); larger and chunked ones
start the pipeline as soon as the head is in and stream through a
:class:`kongtx.proxy.http.BodyPipe`.  A response finished before its request
body was read whole closes the connection, so the rest of that body is never
parsed as a request.  An ``Upgrade`` request the pipeline tunnels (WebSocket)
hands the raw connection over; one it does not leaves HTTP going on.

:class:`FastProxyFactory` counts connections and requests like
``kongtx.http.site.TrackingSite`` (``stats()`` for ``GET /status``,
``drain()`` for ``kong quit``).
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from io import BytesIO
from typing import Any

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from kongtx import SERVER_NAME
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.context import IncomingRequest
from kongtx.proxy.direct_write import write_now
from kongtx.proxy.errors import error_page
from kongtx.proxy.http import BodyPipe, error_bytes
from kongtx.proxy.pipeline import ProxyPipeline
from kongtx.proxy.request import HeaderList
from kongtx.proxy.tunnel import Tunnel

log = logger("kongtx.proxy.fast")

#: Parsed requests waiting behind the one being served before the client stops being read.
MAX_QUEUED = 32

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})


def _status_lines() -> dict[int, bytes]:
    lines = {}
    for status in HTTPStatus:
        lines[status.value] = b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    return lines


_STATUS_LINES = _status_lines()


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, precomputed for every known status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


class _Refused(Exception):
    """A request the parser callbacks refuse (status 400, 414 or 431)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Request:
    """One request as it is parsed, then served."""

    __slots__ = (
        "body",
        "chunks",
        "complete",
        "content_length",
        "expect_continue",
        "head_exact",
        "head_size",
        "headers",
        "http10",
        "keep_alive",
        "method",
        "pipe",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.method = ""
        self.headers: list[tuple[str, str, str]] = []
        self.chunks: list[bytes] = []
        self.body: BytesIO | None = None
        self.pipe: BodyPipe | None = None
        self.complete = False
        self.content_length: int | None = None
        self.keep_alive = True
        self.http10 = False
        self.upgrade = False
        self.expect_continue = False
        #: bytes received while the head is incomplete (a lower bound; -1 once complete)
        self.head_size = 0
        #: size of the request line and header lines parsed so far
        self.head_exact = 0


class _Task:
    """Runs one pipeline coroutine to its end, without a Deferred of its own.

    ``Deferred.fromCoroutine`` allocates a Deferred and its cancellation
    bookkeeping per request; this driver resumes the coroutine from the callback
    of the Deferred it awaits, as Twisted's own driver does (a value is sent in,
    a failure thrown in), in the context copied at its start, and cancels by
    cancelling what it waits on.  A request served from caches (no network
    wait) allocates nothing here but this object.
    """

    __slots__ = ("_context", "_coro", "_on_end", "_req", "waiting")

    def __init__(
        self,
        coro: Coroutine[Any, Any, None],
        on_end: Callable[[_Task, BaseException | None, _Request], None],
        req: _Request,
    ) -> None:
        self._coro = coro
        self._on_end = on_end
        self._req = req
        self._context = contextvars.copy_context()
        self.waiting: Deferred[Any] | None = None

    def step(self, result: object = None) -> None:
        self.waiting = None
        coro = self._coro
        run = self._context.run
        try:
            if isinstance(result, Failure):
                yielded = run(result.throwExceptionIntoGenerator, coro)
            else:
                yielded = run(coro.send, result)
            while not isinstance(yielded, Deferred):
                yielded = run(coro.send, yielded)  # a bare value: handed straight back
        except StopIteration:
            self._on_end(self, None, self._req)
            return
        except BaseException as e:
            self._on_end(self, e, self._req)
            return
        self.waiting = yielded
        yielded.addBoth(self.step)

    def cancel(self) -> None:
        """The client went away: what the coroutine awaits raises ``CancelledError``."""
        waiting = self.waiting
        if waiting is not None:
            waiting.cancel()


class FastProxyProtocol(Protocol):
    """One client connection of the fast front-end (and the pipeline's ``Downstream``)."""

    #: the factory that built this connection (``factory`` too, typed as Twisted's)
    owner: FastProxyFactory

    def __init__(self) -> None:
        self._parser: Any = None
        self._parsing: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._serving: _Request | None = None
        self._task: _Task | None = None
        self._lost = False
        self._closing = False
        self._refusal: int | None = None
        self._refusal_sent = False
        self._read_paused = False
        self._tunnel: Tunnel | None = None
        self._upgraded = False
        self._raw: bytes = b""
        # response state of the request being served
        self._head: bytes | None = None
        self._chunked = False
        self._no_body = False
        self._responded = False
        self._producer: IPushProducer | None = None
        self.connection_id = 0
        self.requests_served = 0
        self._idle_call: Any = None
        #: when the last request ended (or the connection opened), on the node clock
        self._active_at = 0.0
        self.peer_ip = ""
        self.server_addr = ""
        self.server_port = 0
        self.scheme = "http"

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        host = transport.getHost()
        self.peer_ip = getattr(peer, "host", "") or ""
        self.server_addr = getattr(host, "host", "") or ""
        self.server_port = getattr(host, "port", 0) or 0
        if ISSLTransport.providedBy(transport):
            self.scheme = "https"
        else:
            # responses are written as they come (kongtx.proxy.direct_write): no Nagle
            set_nodelay = getattr(transport, "setTcpNoDelay", None)
            if set_nodelay is not None:
                set_nodelay(True)
        self._parser = httptools.HttpRequestParser(self)
        self.connection_id = self.owner.connection_opened(self)
        clock = self.owner.clock
        if clock is not None and self.owner.idle_timeout > 0:
            self._active_at = clock.seconds()
            self._idle_call = clock.call_later(self.owner.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection idle (or sending a head) for ``idle_timeout`` seconds.

        One timer per connection, re-armed from here: a request only records the
        time it started and ended (no timer operation on the hot path).
        """
        self._idle_call = None
        clock = self.owner.clock
        if self._lost or clock is None:
            return
        timeout = self.owner.idle_timeout
        if self._serving is not None or self._tunnel is not None:
            waited = 0.0  # busy: a slow upstream is the upstream timeouts' business
        else:
            waited = clock.seconds() - self._active_at
        if waited >= timeout:
            self._closing = True
            transport: Any = self.transport
            transport.loseConnection()
            return
        self._idle_call = clock.call_later(timeout - waited, self._idle_check)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        idle_call, self._idle_call = self._idle_call, None
        if idle_call is not None and idle_call.active():
            idle_call.cancel()
        self.owner.connection_closed(self)
        for req in [self._serving, self._parsing, *self._queue]:
            if req is not None and req.pipe is not None:
                req.pipe.fail(reason)
        self._queue.clear()
        if self._tunnel is not None:
            self._tunnel.lose()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.write(data)
            return
        if self._closing or self._refusal is not None:
            return
        if self._upgraded:
            # bytes after an Upgrade request wait until we know whether it is tunnelled
            self._raw += data
            return
        self._feed(data)

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
        if (
            req is not None
            and req.head_size > self.owner.max_header_size
            and parser is self._parser
        ):
            # a head still incomplete and already too long (a slow or endless one)
            self._refuse(431 if req.method else 414)
            return
        if len(self._queue) > MAX_QUEUED:
            self._pause_reading()
        if self._serving is None and self._queue:
            self._serve_next()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        req = _Request()
        self._parsing = req

    def on_url(self, url: bytes) -> None:
        req = self._parsing
        assert req is not None
        req.url += url
        if len(req.url) + 14 > self.owner.max_header_size:
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._parsing
        assert req is not None
        if not req.method:
            # the request line is complete: count it once, then each header line
            req.method = self._parser.get_method().decode("ascii")
            req.head_exact = len(req.method) + len(req.url) + 12
        req.head_exact += len(name) + len(value) + 4
        if req.head_exact > self.owner.max_header_size:
            raise _Refused(431)
        sname = name.decode("latin-1")
        low = sname.lower()
        svalue = value.decode("latin-1")
        if low == "transfer-encoding":
            if svalue.strip(" \t").lower() != "chunked" or any(
                h[0] == "transfer-encoding" for h in req.headers
            ):
                raise _Refused(400)
        elif low == "content-length":
            if not svalue.strip(" \t").isdigit() or req.content_length is not None:
                raise _Refused(400)
            req.content_length = int(svalue)
        elif low == "expect" and svalue.strip(" \t").lower() == "100-continue":
            req.expect_continue = True
        req.headers.append((low, sname, svalue))

    def on_headers_complete(self) -> None:
        req = self._parsing
        assert req is not None
        parser = self._parser
        if not req.method:
            req.method = parser.get_method().decode("ascii")
            if len(req.method) + len(req.url) + 12 > self.owner.max_header_size:
                raise _Refused(414)
        req.head_size = -1
        version = parser.get_http_version()
        req.http10 = version == "1.0"
        chunked = any(h[0] == "transfer-encoding" for h in req.headers)
        if chunked and version != "1.1":
            raise _Refused(400)
        req.keep_alive = bool(parser.should_keep_alive())
        req.upgrade = bool(parser.should_upgrade())
        length = req.content_length
        has_body = chunked or (length is not None and length > 0)
        idle = self._serving is None and not self._queue
        if req.expect_continue and has_body and not req.http10:
            if idle:
                self.transport.write(_CONTINUE)  # type: ignore[union-attr]
                req.expect_continue = False
        else:
            req.expect_continue = False
        if has_body and (
            chunked
            or (length is not None and length > self.owner.stream_threshold)
            or req.expect_continue
        ):
            req.pipe = BodyPipe(None if chunked else length, self)
            self._enqueue(req)

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        assert req is not None
        if req.pipe is not None:
            req.pipe.write(body)
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
            req.chunks = []
            req.body = BytesIO(data)
            req.content_length = len(data)
        self._enqueue(req)

    # ------------------------------------------------------------ serving

    def _enqueue(self, req: _Request) -> None:
        # Served once the parser has taken all the bytes at hand: a malformed rest
        # (a bad chunk...) must refuse the request before anything goes upstream.
        self._queue.append(req)

    def _serve_next(self) -> None:
        while self._serving is None and self._queue and not self._lost:
            req = self._queue.popleft()
            self._serving = req
            self._start(req)
        if self._serving is None and not self._lost:
            if self._refusal is not None:
                self._write_refusal()
            elif self._upgraded:
                # an Upgrade request was answered without a tunnel: go on with HTTP
                raw, self._raw = self._raw, b""
                self._upgraded = False
                self._parser = httptools.HttpRequestParser(self)
                self._resume_reading()
                if raw:
                    self._feed(raw)
            elif self._read_paused and len(self._queue) <= MAX_QUEUED // 2:
                self._resume_reading()

    def _start(self, req: _Request) -> None:
        self.requests_served += 1
        self.owner.request_started(self)
        self._head = None
        self._chunked = False
        self._responded = False
        self._no_body = req.method == "HEAD"
        if req.expect_continue and req.pipe is not None and req.pipe.received == 0:
            self.transport.write(_CONTINUE)  # type: ignore[union-attr]
        pipe = req.pipe
        incoming = IncomingRequest(
            req.method,
            req.url.decode("latin-1"),
            HeaderList.from_lowered(req.headers),
            self.peer_ip,
            self.scheme,
            req.body,
            (req.content_length or 0) if req.body is not None else 0,
            self.server_addr,
            self.server_port,
            self.connection_id,
            self.requests_served,
            pipe,
            "HTTP/1.0" if req.http10 else "HTTP/1.1",
        )
        task = _Task(self.owner.pipeline.handle(incoming, self), self._ended, req)
        self._task = task
        task.step()

    def _ended(self, task: _Task, error: BaseException | None, req: _Request) -> None:
        if self._task is task:
            self._task = None
        if error is None or isinstance(error, CancelledError):
            return
        if self._lost or self._serving is not req:
            return
        failure = Failure(error, type(error), error.__traceback__)
        log.failure("proxy request failed: {uri}", failure, uri=req.url)
        if self._head is None and not self._responded:
            accept = next((h[2] for h in req.headers if h[0] == "accept"), None)
            content_type, body = error_page(500, accept)
            self.send_head(
                500,
                [
                    ("Content-Type", content_type),
                    ("Server", SERVER_NAME),
                    ("Content-Length", str(len(body))),
                ],
            )
            self.write(body)
            self.finish()
        else:
            self.abort()

    # ------------------------------------------------------------ Downstream

    @property
    def gone(self) -> bool:
        return self._lost or self._serving is None

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        req = self._serving
        if req is None or self._lost:
            return
        self._responded = True
        lines = []
        framed = False
        for name, value in headers:
            if len(name) == 14 and name.lower() == "content-length":
                framed = True
            lines.append(f"{name}: {value}\r\n")
        if status in _NO_BODY_STATUSES or status < 200:
            self._no_body = True
        close = (
            not req.keep_alive or self.owner.draining or (req.pipe is not None and not req.complete)
        )
        if not framed and not self._no_body:
            if req.http10:
                close = True
            else:
                self._chunked = True
                lines.append("Transfer-Encoding: chunked\r\n")
        if close:
            self._closing = True
            lines.append("Connection: close\r\n")
            if req.pipe is not None and not req.complete:
                req.pipe.abandon()
        elif req.http10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        # One encode for the whole head (names and values are latin-1 by contract).
        self._head = status_line(status) + "".join(lines).encode("latin-1")

    def write(self, data: bytes) -> None:
        if self._lost or self._serving is None or not data or self._no_body:
            return
        head, self._head = self._head, b""
        if self._chunked:
            data = b"".join((head or b"", b"%x\r\n" % len(data), data, b"\r\n"))
        elif head:
            data = head + data
        write_now(self.transport, data)

    def finish(self) -> None:
        req = self._serving
        if req is None or self._lost:
            return
        tail = b"0\r\n\r\n" if self._chunked and not self._no_body else b""
        head, self._head = self._head, None
        if head or tail:
            write_now(self.transport, (head or b"") + tail)
        self._request_done(req)

    def _request_done(self, req: _Request) -> None:
        self._serving = None
        self._task = None
        clock = self.owner.clock
        if clock is not None:
            self._active_at = clock.seconds()
        self.owner.request_finished(self)
        if self._closing or (req.pipe is not None and not req.complete):
            self._closing = True
            self._queue.clear()
            self._upgraded, self._raw = False, b""
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self.owner.draining and not self._queue:
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._serve_next()

    def abort(self) -> None:
        self._closing = True
        self._serving = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def register_producer(self, producer: IPushProducer) -> None:
        if not self._lost and self._producer is None:
            self._producer = producer
            self.transport.registerProducer(producer, True)  # type: ignore[union-attr]

    def unregister_producer(self) -> None:
        if self._producer is not None:
            self._producer = None
            if not self._lost:
                self.transport.unregisterProducer()  # type: ignore[union-attr]

    def splice(self, tunnel: Any) -> None:
        """Hand the connection to ``tunnel``: raw bytes both ways from now on."""
        assert isinstance(tunnel, Tunnel)
        req = self._serving
        self._tunnel = tunnel
        self._serving = None
        self._task = None
        self._queue.clear()
        if req is not None:
            self.owner.request_finished(self)
        transport: Any = self.transport

        def close_client() -> None:
            transport.loseConnection()
            # Over TLS, close the TCP connection too: a WebSocket client waits for EOF.
            lower = getattr(transport, "transport", None)
            if lower is not None:
                lower.loseConnection()

        pending, self._raw = self._raw, b""
        self._upgraded = False
        self._resume_reading()
        tunnel.attach(transport.write, close_client)
        if pending:
            tunnel.write(pending)

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
        transport.write(error_bytes(self._refusal))
        transport.loseConnection()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._lost:
            self._read_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _resume_reading(self) -> None:
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def close_if_idle(self) -> bool:
        """Close now when no request is in flight (draining); ``True`` if closed."""
        if self._serving is None and self._tunnel is None:
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return True
        return False


class FastProxyFactory(Factory):
    """Builds :class:`FastProxyProtocol`; counts like ``TrackingSite`` and drains."""

    noisy = False

    def __init__(
        self,
        pipeline: ProxyPipeline,
        max_header_size: int = 8192,
        stream_threshold: int = 1024 * 1024,
        clock: Clock | None = None,
        idle_timeout: float = 75.0,
    ) -> None:
        self.pipeline = pipeline
        self.max_header_size = max_header_size
        self.stream_threshold = stream_threshold
        #: with a clock, a connection idle or sending a head for ``idle_timeout``
        #: seconds is closed (nginx's keepalive_timeout / client_header_timeout)
        self.clock = clock
        self.idle_timeout = idle_timeout
        #: connection -> requests in flight (0 or 1: one at a time per connection)
        self.channels: dict[FastProxyProtocol, int] = {}
        self.accepted = 0
        self.handled = 0
        self.total_requests = 0
        self.draining = False

    def buildProtocol(self, addr: Any) -> FastProxyProtocol:
        proto = FastProxyProtocol()
        proto.factory = self
        proto.owner = self
        return proto

    # ------------------------------------------------------------ tracking

    def connection_opened(self, proto: FastProxyProtocol) -> int:
        self.accepted += 1
        self.handled += 1
        self.channels[proto] = 0
        return self.accepted

    def connection_closed(self, proto: FastProxyProtocol) -> None:
        self.channels.pop(proto, None)

    def request_started(self, proto: FastProxyProtocol) -> None:
        self.total_requests += 1
        if proto in self.channels:
            self.channels[proto] = 1

    def request_finished(self, proto: FastProxyProtocol) -> None:
        if proto in self.channels:
            self.channels[proto] = 0

    def stats(self) -> dict[str, int]:
        """nginx stub_status counters, as ``TrackingSite.stats()``."""
        writing = sum(1 for n in self.channels.values() if n)
        active = len(self.channels)
        return {
            "connections_active": active,
            "connections_reading": 0,
            "connections_writing": writing,
            "connections_waiting": active - writing,
            "connections_accepted": self.accepted,
            "connections_handled": self.handled,
            "total_requests": self.total_requests,
        }

    def drain(self, clock: Clock, timeout: float, idle_grace: float = 1.0) -> Deferred[None]:
        """Let every connection finish, then fire (call after the listening port stopped).

        A connection answers its next request with ``Connection: close`` and closes;
        one that stays idle for ``idle_grace`` seconds is closed then.  Closing idle
        keep-alive connections at once would race clients that are sending a
        request on them at that moment (the request would fail: a reload must not
        fail requests).  After ``timeout`` seconds the rest are aborted.
        """
        self.draining = True
        result: Deferred[None] = Deferred()
        now = clock.seconds()
        deadline = now + timeout
        idle_since: dict[FastProxyProtocol, float] = {}

        def check() -> None:
            now = clock.seconds()
            for proto, busy in list(self.channels.items()):
                if busy:
                    idle_since.pop(proto, None)
                elif now - idle_since.setdefault(proto, now) >= idle_grace:
                    proto.close_if_idle()
            if not self.channels:
                result.callback(None)
            elif now >= deadline:
                for proto in list(self.channels):
                    transport: Any = proto.transport
                    if transport is not None:
                        transport.abortConnection()
                result.callback(None)
            else:
                clock.call_later(0.05, check)

        check()
        return result
