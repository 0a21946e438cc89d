# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""One client connection of the fast front-end: its requests served in order.

:class:`FastProxyProtocol` reads through :class:`kongtx.proxy.fast_parsing.RequestReader`,
starts each request in the pipeline (``ProxyPipeline.start``: served at once, an
:class:`kongtx.proxy.express.ExpressRequest` waiting for its upstream response, or a
coroutine it runs with :class:`_Task`) and is itself the pipeline's
:class:`kongtx.proxy.context.Downstream`, writing each response head in one piece.
On plain TCP every write goes through the connection's queue, sent at the end of the
reactor turn (``direct_write.TurnSender``).  Built by
:class:`kongtx.proxy.fast.FastProxyFactory`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from kongtx import SERVER_NAME
from kongtx.log import logger
from kongtx.proxy.context import IncomingRequest
from kongtx.proxy.direct_write import batchable, write_now
from kongtx.proxy.errors import error_page
from kongtx.proxy.express import ExpressRequest
from kongtx.proxy.fast_parsing import CONTINUE_RESPONSE, MAX_QUEUED, ParsedRequest, RequestReader
from kongtx.proxy.request import HeaderList
from kongtx.proxy.tunnel import Tunnel

log = logger("kongtx.proxy.fast")

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
        on_end: Callable[[_Task, BaseException | None, ParsedRequest], None],
        req: ParsedRequest,
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


class FastProxyProtocol(RequestReader):
    """One client connection of the fast front-end (and the pipeline's ``Downstream``)."""

    def __init__(self) -> None:
        super().__init__()
        #: what the request being served waits on (cancelled when the client goes away)
        self._task: _Task | ExpressRequest | None = None
        self._tunnel: Tunnel | None = None
        # response state of the request being served
        self._head: bytes | None = None
        self._chunked = False
        self._no_body = False
        self._responded = False
        self._producer: IPushProducer | None = None
        #: bytes for the client not sent yet, in order (plain TCP: sent at the end of
        #: the reactor turn, with every other connection's); ``None``: written at once
        self._out: list[bytes] | None = None
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
            if self.owner.turn is not None and batchable(transport):
                self._out = []
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
            self.flush()
            transport: Any = self.transport
            transport.loseConnection()
            return
        self._idle_call = clock.call_later(timeout - waited, self._idle_check)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._out = None  # whatever was queued has nowhere to go
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

    # ------------------------------------------------------------ serving

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

    def _start(self, req: ParsedRequest) -> None:
        self.requests_served += 1
        self.owner.request_started(self)
        self._head = None
        self._chunked = False
        self._responded = False
        self._no_body = req.method == "HEAD"
        if req.expect_continue and req.pipe is not None and req.pipe.received == 0:
            self._send(CONTINUE_RESPONSE)
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
        try:
            started = self.owner.pipeline.start(incoming, self)
        except BaseException as e:
            self._ended(None, e, req)
            return
        if started is None:
            return  # served already
        if isinstance(started, ExpressRequest):
            # the express path waits for the upstream response (no coroutine)
            if self._serving is req:
                self._task = started
            started.watch(self._express_ended, req)
            return
        task = _Task(started, self._ended, req)
        self._task = task
        task.step()

    def _express_ended(self, express: ExpressRequest, error: BaseException | None) -> None:
        req = express.tag
        assert isinstance(req, ParsedRequest)
        self._ended(express, error, req)

    def _ended(
        self, task: _Task | ExpressRequest | None, error: BaseException | None, req: ParsedRequest
    ) -> None:
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
        lines = [f"{name}: {value}\r\n" for name, value in headers]
        framed = False
        for name, _ in headers:
            if len(name) == 14 and name.lower() == "content-length":
                framed = True
                break
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
        self._send(data)

    def finish(self) -> None:
        req = self._serving
        if req is None or self._lost:
            return
        tail = b"0\r\n\r\n" if self._chunked and not self._no_body else b""
        head, self._head = self._head, None
        if head or tail:
            self._send((head or b"") + tail)
        self._request_done(req)

    def _request_done(self, req: ParsedRequest) -> None:
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
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self.owner.draining and not self._queue:
            self._closing = True
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._serve_next()

    def _send(self, data: bytes) -> None:
        """Write ``data`` to the client after whatever is queued (every write goes here)."""
        out = self._out
        if out is None:
            write_now(self.transport, data)
            return
        if not out:
            turn: Any = self.owner.turn
            turn.flush_later(self)
        out.append(data)

    def flush(self) -> None:
        """Send what is queued, in one piece (the end of the turn, or before a close)."""
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            write_now(self.transport, data)

    def abort(self) -> None:
        self._closing = True
        self._serving = None
        transport: Any = self.transport
        if transport is not None:
            self.flush()  # what was written before goes first, as if written at once
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
        self.flush()  # the responses before the tunnel's bytes
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

    def close_if_idle(self) -> bool:
        """Close now when no request is in flight (draining); ``True`` if closed."""
        if self._serving is None and self._tunnel is None:
            self._closing = True
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return True
        return False
