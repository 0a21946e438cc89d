# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""One client connection of the fast front-end: its requests served in order.

:class:`FastProxyProtocol` reads through :class:`kongtx.proxy.fast_parsing.RequestReader`,
starts each request in the pipeline (``ProxyPipeline.start``: served at once, an
:class:`kongtx.proxy.express.ExpressRequest` waiting for its upstream response, or a
coroutine it runs with :class:`_Task`) and is itself the pipeline's
:class:`kongtx.proxy.context.Downstream` through its base
:class:`kongtx.proxy.fast_writing.ResponseWriter` (the response heads, framing and the
write queue).  Built by :class:`kongtx.proxy.fast.FastProxyFactory`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from kongtx import SERVER_NAME
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.direct_write import batchable
from kongtx.proxy.errors import error_page
from kongtx.proxy.express import ExpressRequest
from kongtx.proxy.fast_parsing import CONTINUE_RESPONSE, MAX_QUEUED, ParsedRequest
from kongtx.proxy.fast_writing import ResponseWriter
from kongtx.proxy.pipeline import ProxyPipeline
from kongtx.proxy.tunnel import Tunnel

log = logger("kongtx.proxy.fast")


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


class FastProxyProtocol(ResponseWriter):
    """One client connection of the fast front-end (and the pipeline's ``Downstream``)."""

    def __init__(self) -> None:
        super().__init__()
        #: what the request being served waits on (cancelled when the client goes away)
        self._task: _Task | ExpressRequest | None = None
        self._tunnel: Tunnel | None = None
        self.connection_id = 0
        self.requests_served = 0
        self._idle_call: Any = None
        #: when the last request ended (or the connection opened), on the node clock
        self._active_at = 0.0
        self.peer_ip = ""
        self.server_addr = ""
        self.server_port = 0
        self.scheme = "http"
        #: the factory's clock and pipeline (copied when the connection is made)
        self._clock: Clock | None = None
        #: the clock's reactor's time (``Clock.seconds`` is an interpreted call)
        self._now: Callable[[], float] | None = None
        self._pipeline: ProxyPipeline | None = None

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        owner = self.owner
        self.max_header_size = owner.max_header_size
        self.stream_threshold = owner.stream_threshold
        self._turn = owner.turn
        self._clock = owner.clock
        if owner.clock is not None:
            self._now = owner.clock.reactor.seconds
        self._pipeline = owner.pipeline
        self.draining = owner.draining
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
            if self._turn is not None and batchable(transport):
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
        self._head = None
        self._chunked = False
        self._responded = False
        self._no_body = req.method == "HEAD"
        if req.expect_continue and req.pipe is not None and req.pipe.received == 0:
            self._send(CONTINUE_RESPONSE)
        # the parsed request is the pipeline's IncomingRequest: what it lacks
        req.uri = req.url.decode("latin-1")
        req.peer_ip = self.peer_ip
        req.scheme = self.scheme
        req.body_length = (req.content_length or 0) if req.body is not None else 0
        req.server_addr = self.server_addr
        req.server_port = self.server_port
        req.connection_id = self.connection_id
        req.connection_requests = self.requests_served
        req.stream = req.pipe
        if req.http10:
            req.http_version = "HTTP/1.0"
        pipeline = self._pipeline
        assert pipeline is not None
        try:
            started = pipeline.start(req, self)
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
            accept = req.headers.get_lowered("accept")
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

    def _request_done(self, req: ParsedRequest) -> None:
        self._serving = None
        self._task = None
        now = self._now
        if now is not None:
            self._active_at = now()
        if self._closing or (req.pipe is not None and not req.complete):
            self._closing = True
            self._queue.clear()
            self._upgraded, self._raw = False, b""
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self.draining and not self._queue:
            self._closing = True
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._serve_next()

    def splice(self, tunnel: Any) -> None:
        """Hand the connection to ``tunnel``: raw bytes both ways from now on."""
        assert isinstance(tunnel, Tunnel)
        self._tunnel = tunnel
        self._serving = None
        self._task = None
        self._queue.clear()
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

    @property
    def idle(self) -> bool:
        """No request in flight (``FastProxyFactory.channels``)."""
        return self._serving is None

    def close_if_idle(self) -> bool:
        """Close now when no request is in flight (draining); ``True`` if closed."""
        if self._serving is None and self._tunnel is None:
            self._closing = True
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return True
        return False
