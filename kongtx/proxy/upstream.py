# -*- test-case-name: tests.unit.test_upstream_client -*-
"""The pooled upstream HTTP/1.1 client (DESIGN.md §3 step 3, STYLE.md rules 9-10).

Kong 0.9 spoke HTTP/1.0 with ``Connection: close`` to every upstream; we keep a
keep-alive pool per (scheme, host, port) (``upstream_keepalive`` idle connections
each), because a new TCP (and TLS) handshake per request is most of a proxy's cost.

A lean client of our own rather than ``twisted.web.client.Agent``: profiling showed
Agent's pool, line parser and three or four Deferred chains per request costing
more than the rest of the proxy's own work.  Here one protocol object per
connection writes the request head in one call and parses the response with
``httptools`` (llhttp, the strict C parser Node.js uses), one request at a time.

* timeouts on the injected clock, nginx style: connect (``upstream_connect_timeout``,
  the endpoint's), send (between two successful writes of the request body) and
  read (between two reads: waiting for the headers and between body chunks), in ms;
* HTTPS upstreams with SNI and no certificate verification (as Kong 0.9);
* DNS through the reactor's resolver (``HostnameEndpoint``: a thread), never blocking;
* the request body streamed from its spool file with backpressure, the response body
  handed on chunk by chunk as a push producer, so nothing is held in memory;
* a pooled connection the upstream closed while idle is detected when the request
  fails before a single response byte, and the request is retried once on a new one;
* every failure mapped to :class:`kongtx.proxy.errors.UpstreamError`: refused,
  unreachable, an invalid response -> 502; a timeout -> 504.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import IO, Any, Protocol

import httptools
from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.direct_write import write_now
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.request import HeaderList

log = logger("kongtx.proxy.upstream")

#: Request headers the client never forwards itself: it frames the body it sends.
_FRAMING = frozenset({"content-length", "transfer-encoding"})

#: Response headers never passed to the client (hop-by-hop, RFC 7230 §6.1), and the
#: framing the client side recomputes (Content-Length is re-added from ``length``).
_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "content-length",
    }
)

#: Methods whose empty body is still framed with ``Content-Length: 0``.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Characters a header name sent upstream must not contain (checked in C, per name).
_NAME_FORBIDDEN = frozenset(" \t\r\n:")

BODY_CHUNK = 64 * 1024


class ResponseSink(Protocol):
    """Where an upstream response body goes (the pipeline's downstream side)."""

    def write(self, data: bytes) -> None:
        """One chunk of the body."""

    def finish(self) -> None:
        """The body is complete."""

    def fail(self, reason: Failure) -> None:
        """The upstream broke (or timed out) mid-body: the client must not see a clean end."""


# ------------------------------------------------------------------------- TLS


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedTLSCreator:
    """TLS to an upstream: SNI sent, certificate not verified (Kong 0.9 behaviour)."""

    def __init__(self, context: SSL.Context, hostname: str) -> None:
        self._context = context
        self._sni: bytes | None = None
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            self._sni = hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        if self._sni:
            conn.set_tlsext_host_name(self._sni)
        conn.set_connect_state()
        return conn


def client_tls_context() -> SSL.Context:
    """The client context for https upstreams and probes: no verification, as Kong 0.9."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    return ctx


# ------------------------------------------------------------------------- timers


class _Deadline:
    """One resettable timeout on the node clock (send or read, nginx style)."""

    __slots__ = ("_call", "_clock", "_fire", "fired", "phase")

    def __init__(self, clock: Clock, fire: Callable[[], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._call: IDelayedCall | None = None
        self.fired = False
        self.phase = ""

    def start(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.fired = False
        call = self._call
        if call is not None and call.active():
            if seconds > 0:
                call.reset(seconds)  # cheaper than cancel + a new timer
                return
            call.cancel()
        self._call = None
        if seconds > 0:
            self._call = self._clock.call_later(seconds, self._expired)

    def touch(self, seconds: float) -> None:
        call = self._call
        if call is not None and call.active():
            call.reset(seconds)

    def cancel(self) -> None:
        call = self._call
        self._call = None
        if call is not None and call.active():
            call.cancel()

    def _expired(self) -> None:
        self._call = None
        self.fired = True
        self._fire()


# ------------------------------------------------------------------------- request body


@implementer(IBodyProducer)
class FileBodyProducer:
    """Streams a (spooled) request body upstream, obeying the transport's backpressure.

    Synchronous reads of a local spool file are what nginx does too; each reactor
    turn writes until the transport says "pause", so memory stays flat.
    """

    def __init__(self, body: IO[bytes], length: int, on_progress: Callable[[], None]) -> None:
        self.length = length
        self._body = body
        self._on_progress = on_progress
        self._consumer: IConsumer | None = None
        self._paused = False
        self._stopped = False
        self._sent = 0
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        self._pump()
        return self._done

    def _pump(self) -> None:
        consumer = self._consumer
        done = self._done
        if consumer is None or done is None:
            return
        while not self._paused and not self._stopped and self._sent < self.length:
            data = self._body.read(min(BODY_CHUNK, self.length - self._sent))
            if not data:
                self._stopped = True
                done.errback(Failure(OSError("request body ended early")))
                return
            self._sent += len(data)
            consumer.write(data)
            self._on_progress()
        if self._sent >= self.length and not self._stopped:
            self._stopped = True
            done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._pump()

    def stopProducing(self) -> None:
        self._stopped = True


# ------------------------------------------------------------------------- URLs


@lru_cache(maxsize=4096)
def _split_origin(origin: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``scheme://host[:port]``."""
    scheme, _, authority = origin.partition("://")
    scheme = scheme.lower()
    authority = authority.rsplit("@", 1)[-1]
    default = 443 if scheme == "https" else 80
    if authority.startswith("["):
        end = authority.find("]")
        host = authority[1:end]
        rest = authority[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:] else default
    elif ":" in authority:
        host, _, raw_port = authority.partition(":")
        port = int(raw_port) if raw_port else default
    else:
        host, port = authority, default
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an upstream URL: {origin!r}")
    return scheme, host.lower(), port


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, request target)`` of an absolute http(s) URL."""
    start = url.find("://")
    if start < 0:
        raise ValueError(f"not an upstream URL: {url!r}")
    cut = len(url)
    for sep in ("/", "?"):
        i = url.find(sep, start + 3)
        if 0 <= i < cut:
            cut = i
    scheme, host, port = _split_origin(url[:cut])
    target = url[cut:]
    if not target.startswith("/"):
        target = "/" + target
    return scheme, host, port, target


def build_head(
    method: str, target: str, headers: HeaderList, length: int | None, chunked: bool = False
) -> bytes:
    """The request line and headers, framed by ``length`` (``None``: no body) or chunked.

    Raises:
        UpstreamError: a CR or LF in a header (a plugin must not be able to
            smuggle a second request upstream).
    """
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for low, name, value in headers._items:
        if low in _FRAMING:
            continue
        if "\r" in value or "\n" in value or not name or not _NAME_FORBIDDEN.isdisjoint(name):
            raise UpstreamError(502, f"invalid header for the upstream: {name!r}")
        lines.append(f"{name}: {value}\r\n")
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


# ------------------------------------------------------------------------- response


class _ChunkedWriter:
    """Frames each write as one HTTP/1.1 chunk (a streamed body of unknown length)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        if data:
            self._transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])


#: ``(scheme, host to connect to, port, name for TLS)``; the name is set only for a
#: balanced peer, whose host is then an IP (``""``: connect to the URL's host).
PoolKey = tuple[str, str, int, str]


class ConnectError(UpstreamError):
    """The connection to the upstream failed or timed out: nothing was sent."""


class _Stale(Exception):
    """A pooled connection died before any response byte: retry on a fresh one."""


@implementer(IPushProducer)
class UpstreamResponse:
    """Status and headers of an upstream response; its body is delivered on demand.

    It is also the push producer the client side registers, so a slow client
    pauses the upstream socket instead of buffering the body in memory.
    """

    def __init__(
        self,
        exchange: _Exchange,
        status: int,
        reason: bytes,
        headers: HeaderList,
        length: int | None,
    ) -> None:
        self._exchange = exchange
        self.status = status
        self.reason = reason
        self.headers = headers
        #: the upstream's Content-Length (also for HEAD), ``None`` when not given
        self.length = length

    def deliver(self, sink: ResponseSink) -> None:
        """Stream the body into ``sink``; the read timeout applies between chunks."""
        self._exchange.attach(sink)

    def pauseProducing(self) -> None:
        self._exchange.pause()

    def resumeProducing(self) -> None:
        self._exchange.resume()

    def stopProducing(self) -> None:
        """Abandon the body (client gone): the connection is closed, never reused."""
        self._exchange.abandon()


class _Exchange:
    """One request and its response on one connection (httptools callbacks land here)."""

    def __init__(
        self,
        client: UpstreamClient,
        conn: _Connection,
        method: str,
        head: bytes,
        producer: Any,
        chunked: bool = False,
    ) -> None:
        self.client = client
        self.conn = conn
        self.method = method
        self.head = head
        self.producer = producer
        self.chunked = chunked
        self.parser = httptools.HttpResponseParser(self)
        # The connection's one timer: send/read deadline now, idle timeout in the pool.
        self.deadline = conn.timer_for(client._clock)
        self.result: Deferred[UpstreamResponse] = Deferred(lambda _: self.abandon())
        self.response: UpstreamResponse | None = None
        self.sink: ResponseSink | None = None
        self.pending: list[bytes] = []
        self.got_bytes = False
        self.complete = False
        self.finished = False
        self.abandoned = False
        self.paused = False
        self.keep_alive = False
        self.sending = False
        self.read_until_close = False
        # parser state of the current message
        self._reason = b""
        self._headers: list[tuple[str, str, str]] = []
        self._events: list[tuple[int, bytes]] = []

    # ------------------------------------------------------------ sending

    def start(self) -> Deferred[UpstreamResponse]:
        transport: Any = self.conn.transport
        assert transport is not None
        self.conn.exchange = self
        write_now(transport, self.head)
        producer = self.producer
        if producer is not None:
            self.sending = True
            self.deadline.start("send", self.client.send_timeout)
            transport.registerProducer(producer, True)
            consumer = _ChunkedWriter(transport) if self.chunked else transport
            producer.startProducing(consumer).addCallbacks(self._sent, self._send_failed)
        else:
            self.deadline.start("read", self.client.read_timeout)
        return self.result

    def progress(self) -> None:
        self.deadline.touch(self.client.send_timeout)

    def _sent(self, _: object) -> None:
        self.sending = False
        transport: Any = self.conn.transport
        if _usable(transport):
            if self.chunked:
                transport.write(b"0\r\n\r\n")
            transport.unregisterProducer()
        if not self.complete and not self.deadline.fired and self.response is None:
            self.deadline.start("read", self.client.read_timeout)

    def _send_failed(self, failure: Failure) -> None:
        self.sending = False
        self._fail_before_response(UpstreamError(502, f"sending the body failed: {failure.value}"))
        self.conn.abort()

    # ------------------------------------------------------------ receiving

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.response is not None and not self.paused:
            self.deadline.touch(self.client.read_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._events.append((_COMPLETE, b""))
        except httptools.HttpParserError as e:
            if self.response is None:
                self._fail_before_response(UpstreamError(502, f"invalid upstream response: {e}"))
                self.conn.abort()
                return
            if not self.complete:
                self._events.append((_ERROR, str(e).encode()))
        self._process()

    # httptools callbacks (the parser calls them during feed_data)
    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        sname = name.decode("latin-1")
        self._headers.append((sname.lower(), sname, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue and friends: the real response follows
        # llhttp forgets the connection flags once the message completes: read them now.
        self.keep_alive = self.parser.should_keep_alive()
        self._events.append((_HEADERS, b""))
        if self.method == "HEAD":
            self._events.append((_COMPLETE, b""))

    def on_body(self, body: bytes) -> None:
        self._events.append((_BODY, body))

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return
        self._events.append((_COMPLETE, b""))

    def _process(self) -> None:
        events, self._events = self._events, []
        for kind, data in events:
            if self.finished or self.abandoned:
                return
            if kind == _HEADERS:
                self._headers_done()
            elif kind == _BODY:
                if self.complete:
                    continue  # bytes after a HEAD response's headers: ignored
                if self.sink is None:
                    self.pending.append(data)
                else:
                    self.sink.write(data)
            elif kind == _COMPLETE:
                if not self.complete:
                    self.complete = True
                    self._maybe_finish()
            elif kind == _ERROR:
                self._fail_body(Failure(UpstreamError(502, data.decode())))

    def _headers_done(self) -> None:
        if self.response is not None:
            return
        items = self._headers
        length: int | None = None
        chunked = False
        for low, _, value in items:
            if low == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif low == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            length = None
        status = self.parser.get_status_code()
        no_body = self.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        self.read_until_close = length is None and not chunked and not no_body
        headers = HeaderList()
        headers._items = [e for e in items if e[0] not in _RESPONSE_DROP]
        response = UpstreamResponse(self, status, self._reason, headers, length)
        self.response = response
        if self.sending and self.producer is not None:
            # The upstream answered before taking the whole body (413...): stop sending;
            # the connection cannot be reused since the upstream stopped reading.
            self.producer.stopProducing()
            self.keep_alive = False
        self.deadline.start("read", self.client.read_timeout)
        self.result.callback(response)

    def _maybe_finish(self) -> None:
        if not self.complete or self.sink is None or self.finished:
            return
        self.finished = True
        if self.paused:
            # The client paused us and the body ended meanwhile: a pooled connection
            # must go back reading, or the next response on it would never be read.
            self.paused = False
            transport: Any = self.conn.transport
            if _usable(transport):
                transport.resumeProducing()
        if self.keep_alive and not self.sending and not self.abandoned:
            self.client._release(self.conn)  # re-arms the timer as the idle timeout
        else:
            self.deadline.cancel()
            self.conn.close()
        self.sink.finish()

    def attach(self, sink: ResponseSink) -> None:
        self.sink = sink
        pending, self.pending = self.pending, []
        for data in pending:
            sink.write(data)
        if self.complete:
            self._maybe_finish()

    # ------------------------------------------------------------ flow control

    def pause(self) -> None:
        if self.finished:
            return  # the connection may be back in the pool: not ours to pause
        self.paused = True
        self.deadline.cancel()  # the client is slow, not the upstream
        transport: Any = self.conn.transport
        if transport is not None:
            transport.pauseProducing()

    def resume(self) -> None:
        if not self.paused or self.finished:
            return
        self.paused = False
        if not self.finished:
            self.deadline.start("read", self.client.read_timeout)
        transport: Any = self.conn.transport
        if _usable(transport):
            transport.resumeProducing()

    def abandon(self) -> None:
        """Client gone: close the connection; nothing more is delivered."""
        if self.finished or self.abandoned:
            return
        self.abandoned = True
        self.deadline.cancel()
        if self.producer is not None:
            self.producer.stopProducing()
        self.conn.abort()

    # ------------------------------------------------------------ failures

    def _timed_out(self) -> None:
        if self.response is None:
            self._fail_before_response(
                UpstreamError(504, f"upstream timed out ({self.deadline.phase})")
            )
        else:
            self._fail_body(Failure(UpstreamError(504, "upstream timed out mid-body")))
        self.conn.abort()

    def _fail_before_response(self, error: Exception) -> None:
        self.deadline.cancel()
        if not self.result.called:
            self.finished = True
            self.result.errback(Failure(error))

    def _fail_body(self, failure: Failure) -> None:
        if self.finished:
            return
        self.finished = True
        self.deadline.cancel()
        self.conn.abort()
        if self.sink is not None:
            self.sink.fail(failure)

    def connection_lost(self, reason: Failure) -> None:
        self.deadline.cancel()
        if self.producer is not None and self.sending:
            self.producer.stopProducing()
        if self.abandoned or self.finished:
            return
        if self.response is None:
            if not self.got_bytes and self.conn.reused:
                self.finished = True
                self.result.errback(Failure(_Stale()))
            else:
                self._fail_before_response(
                    UpstreamError(502, f"upstream closed the connection: {reason.value!r}")
                )
            return
        if self.read_until_close and not self.complete:
            self.complete = True
            self.keep_alive = False
            self._maybe_finish()
            return
        if not self.complete:
            self._fail_body(reason)


_HEADERS, _BODY, _COMPLETE, _ERROR = range(4)


class _Connection(TxProtocol):
    """One upstream connection: carries one exchange at a time, then waits in the pool."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.exchange: _Exchange | None = None
        self.reused = False
        self.timer: _Deadline | None = None
        self.client: UpstreamClient | None = None

    def timer_for(self, clock: Clock) -> _Deadline:
        """This connection's one timer, kept for its life: re-arming it is a cheap reset.

        (A timer per request plus one per pool stay cost two ``callLater`` and two
        cancellations per proxied request.)
        """
        timer = self.timer
        if timer is None:
            timer = self.timer = _Deadline(clock, self._timer_fired)
        return timer

    def _timer_fired(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange._timed_out()
        else:
            self.close()  # idle in the pool for too long (connectionLost forgets it)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        set_nodelay = getattr(transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream is confused; never reuse it.
            self.abort()
            return
        exchange.data_received(data)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        if self.client is not None:
            self.client._forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connection_lost(reason)

    def close(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, key: PoolKey, client: UpstreamClient) -> None:
        self.key = key
        self.client = client

    def buildProtocol(self, addr: object) -> _Connection:
        conn = _Connection(self.key)
        conn.client = self.client
        conn.factory = self
        return conn


class UpstreamClient:
    """One per node: the keep-alive pool and the request logic.

    Args:
        reactor: provides TCP, time and the name resolver (``nameResolver``).
        clock: the node's timer owner (timeouts, idle connections).
        keepalive: idle connections kept per upstream (``upstream_keepalive``);
            0 closes every connection after its response, like Kong 0.9.
        connect_timeout, send_timeout, read_timeout: milliseconds.
        idle_timeout: seconds an idle pooled connection is kept.
    """

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        *,
        keepalive: int = 60,
        connect_timeout: int = 60000,
        send_timeout: int = 60000,
        read_timeout: int = 60000,
        idle_timeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self.keepalive = keepalive
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout / 1000.0
        self.send_timeout = send_timeout / 1000.0
        self.read_timeout = read_timeout / 1000.0
        self._tls_context = client_tls_context()
        # Endpoints are stateless and reusable; building one costs an IDNA round trip.
        self._endpoints: dict[PoolKey, IStreamClientEndpoint] = {}
        self._idle: dict[PoolKey, list[_Connection]] = {}

    # ------------------------------------------------------------ endpoints

    def endpoint_for(self, scheme: bytes, host: bytes, port: int) -> IStreamClientEndpoint:
        """A TCP (or TCP+TLS) endpoint; host names resolve off the reactor thread."""
        return self._cached_endpoint((scheme.decode("ascii"), host.decode("ascii"), port, ""))

    def _endpoint(self, key: PoolKey) -> IStreamClientEndpoint:
        """The endpoint of a pool key: the URL's host, or a balanced peer's IP."""
        scheme, host, port, name = key
        if not name:
            return self.endpoint_for(scheme.encode("ascii"), host.encode("idna"), port)
        return self._cached_endpoint(key)

    def _cached_endpoint(self, key: PoolKey) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if len(self._endpoints) > 4096:
                self._endpoints.clear()
            endpoint = self._endpoints[key] = self._make_endpoint(key)
        return endpoint

    def _make_endpoint(self, key: PoolKey) -> IStreamClientEndpoint:
        scheme, host, port, name = key
        timeout = self.connect_timeout or 30.0
        endpoint: IStreamClientEndpoint
        if name:
            # a balanced peer: connect to its IP (no name resolution at all); TLS
            # still names the upstream
            if ":" in host:
                endpoint = TCP6ClientEndpoint(self._reactor, host, port, timeout=timeout)
            else:
                endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=timeout)
        else:
            name = host
            endpoint = HostnameEndpoint(self._reactor, host.encode("ascii"), port, timeout=timeout)
        if scheme == "https":
            endpoint = wrapClientTLS(UnverifiedTLSCreator(self._tls_context, name), endpoint)
        return endpoint

    # ------------------------------------------------------------ pool

    def _take(self, key: PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            transport: Any = conn.transport
            if _usable(transport):
                conn.reused = True
                return conn
        return None

    def _release(self, conn: _Connection) -> None:
        conn.exchange = None
        timer = conn.timer_for(self._clock)
        if not _usable(conn.transport):
            timer.cancel()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.keepalive:
            timer.cancel()
            conn.close()
            return
        idle.append(conn)
        timer.start("idle", self.idle_timeout)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.timer is not None:
            conn.timer.cancel()

    async def _connect(self, key: PoolKey) -> _Connection:
        endpoint = self._endpoint(key)
        try:
            conn = await endpoint.connect(_ConnectionFactory(key, self))
        except Exception as exc:
            raise connect_error(exc) from exc
        assert isinstance(conn, _Connection)
        return conn

    # ------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: IO[bytes] | None = None,
        length: int = 0,
        stream: Any = None,
        address: tuple[str, int] | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response headers arrived.

        The body is either ``body`` (a rewindable file of ``length`` bytes) or
        ``stream`` (a producer still receiving it from the client: see
        ``kongtx.proxy.http.BodyPipe``; framed chunked when its length is unknown).

        ``address`` (a balanced peer's ``(ip, port)``) is where the connection goes;
        the URL, the ``Host`` header and TLS's SNI keep the upstream's name, and the
        keep-alive pool is keyed by the address (and that name, for TLS).

        Raises:
            ConnectError: the connection could not be made (nothing was sent).
            UpstreamError: 502 or 504 (SPEC §3.5), never anything else but
                ``CancelledError`` (the client went away).
        """
        try:
            scheme, host, port, target = split_url(url)
        except ValueError as exc:
            raise UpstreamError(502, str(exc)) from exc
        key: PoolKey
        if address is None:
            key = (scheme, host, port, "")
        else:
            key = (scheme, address[0], address[1], host)
        if stream is not None:
            # A body still arriving from the client: it cannot be replayed, so it never
            # goes on a pooled connection that might turn out to be stale.
            declared = stream.declared_length
            head = build_head(method, target, headers, declared, chunked=declared is None)
            conn = await self._connect(key)
            exchange = _Exchange(self, conn, method, head, stream, chunked=declared is None)
            stream.on_progress = exchange.progress
            try:
                return await exchange.start()
            except _Stale:
                raise UpstreamError(502, "upstream closed the connection") from None
        has_body = body is not None and length > 0
        head = build_head(method, target, headers, length if has_body else None)
        for attempt in (0, 1):
            pooled = self._take(key) if attempt == 0 else None
            conn = pooled if pooled is not None else await self._connect(key)
            producer: FileBodyProducer | None = None
            if has_body:
                assert body is not None
                body.seek(0)
                producer = FileBodyProducer(body, length, _no_progress)
            exchange = _Exchange(self, conn, method, head, producer)
            if producer is not None:
                producer._on_progress = exchange.progress
            try:
                return await exchange.start()
            except _Stale:
                log.debug(
                    "pooled connection to {host}:{port} was closed; retrying", host=host, port=port
                )
                continue
        raise UpstreamError(502, "upstream closed the connection")

    def close(self) -> Deferred[None]:
        """Close every idle pooled connection (node stopping)."""
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
        return Deferred.fromCoroutine(_done())


def _usable(transport: Any) -> bool:
    return (
        transport is not None
        and getattr(transport, "connected", True)
        and not getattr(transport, "disconnecting", False)
    )


def _no_progress() -> None:
    return None


async def _done() -> None:
    return None


def connect_error(exc: Exception) -> Exception:
    """What a failed connect raises: :class:`ConnectError`, but ``CancelledError`` when
    the client went away (an endpoint cancels with ``ConnectingCancelledError``): that is
    no failure of the upstream, to be counted against a balanced pick or retried."""
    if isinstance(exc, CancelledError | ierror.ConnectingCancelledError):
        return CancelledError()
    e = classify(Failure(exc))
    return ConnectError(e.status, e.reason)


def classify(failure: Failure) -> UpstreamError:
    """Map a connect failure to the error page it deserves (SPEC §3.5)."""
    exc = failure.value
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, ierror.TimeoutError | TimeoutError):
        return UpstreamError(504, "upstream connect timed out")
    if isinstance(exc, ierror.DNSLookupError):
        return UpstreamError(502, f"upstream name not resolved: {exc}")
    reasons = getattr(exc, "reasons", None)
    if reasons:
        for inner in reasons:
            if isinstance(inner, Failure) and inner.check(ierror.TimeoutError, TimeoutError):
                return UpstreamError(504, "upstream timed out")
    return UpstreamError(502, f"upstream unreachable: {exc!r}")


def make_upstream_client(
    reactor: IReactorTCP | IReactorTime | IReactorCore, clock: Clock, config: Any
) -> UpstreamClient:
    """The node's client, configured from ``upstream_*`` settings (ms)."""
    return UpstreamClient(
        reactor,
        clock,
        keepalive=int(getattr(config, "upstream_keepalive", 60)),
        connect_timeout=int(getattr(config, "upstream_connect_timeout", 60000)),
        send_timeout=int(getattr(config, "upstream_send_timeout", 60000)),
        read_timeout=int(getattr(config, "upstream_read_timeout", 60000)),
    )


# ------------------------------------------------------------------------- tunnels


class Tunnel(TxProtocol):
    """A raw upstream connection for an upgraded request (WebSocket).

    After the handshake is written, bytes flow both ways untouched: whatever the
    upstream answers (101 or not) goes to the client as is.  ``closed`` fires when
    either side is gone.
    """

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self._peer_write: Callable[[bytes], None] | None = None
        self._peer_close: Callable[[], None] | None = None
        self._pending: list[bytes] = []

    def attach(self, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        """Connect the client side: upstream bytes go to ``write``."""
        self._peer_write = write
        self._peer_close = close
        pending, self._pending = self._pending, []
        for data in pending:
            write(data)
        if self.closed.called:
            close()

    def write(self, data: bytes) -> None:
        """Bytes from the client to the upstream."""
        if self.transport is not None:
            self.transport.write(data)

    def lose(self) -> None:
        """The client went away."""
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._peer_write is None:
            self._pending.append(data)
        else:
            self._peer_write(data)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        if self._peer_close is not None:
            self._peer_close()
        if not self.closed.called:
            self.closed.callback(None)


async def open_tunnel(
    client: UpstreamClient,
    scheme: str,
    host: str,
    port: int,
    address: tuple[str, int] | None = None,
) -> Tunnel:
    """Connect a :class:`Tunnel` to an upstream (connect timeout, 502/504 mapping).

    ``address``: a balanced peer's ``(ip, port)`` to connect to instead (TLS still
    names ``host``).
    """
    from twisted.internet.protocol import Factory

    if address is None:
        endpoint = client.endpoint_for(scheme.encode("ascii"), host.encode("idna"), port)
    else:
        endpoint = client._endpoint((scheme, address[0], address[1], host))
    try:
        proto = await endpoint.connect(Factory.forProtocol(Tunnel))
    except Exception as exc:
        raise connect_error(exc) from exc
    assert isinstance(proto, Tunnel)
    return proto
