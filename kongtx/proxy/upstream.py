# -*- test-case-name: tests.unit.test_upstream_client -*-
"""The pooled upstream HTTP/1.1 client (DESIGN.md §3 step 3, STYLE.md rules 9-10).

Kong 0.9 spoke HTTP/1.0 with ``Connection: close`` to every upstream; we keep a
keep-alive pool per (scheme, host, port) (``upstream_keepalive`` idle connections
each), because a new TCP (and TLS) handshake per request is most of a proxy's cost.

Built on ``twisted.web.client.Agent`` + ``HTTPConnectionPool`` so HTTP parsing,
chunked decoding and connection reuse are Twisted's well-tested code.  On top:

* timeouts on the injected clock, nginx style: connect (``upstream_connect_timeout``),
  send (between two successful writes of the request body) and read (between two
  reads: waiting for the headers and between body chunks), all in ms;
* HTTPS upstreams with SNI and no certificate verification (as Kong 0.9);
* DNS through the reactor's resolver (a thread), never blocking the reactor;
* the request body streamed from its spool file with backpressure, the response body
  handed on chunk by chunk as a push producer, so nothing is held in memory;
* every failure mapped to :class:`kongtx.proxy.errors.UpstreamError`: refused,
  unreachable, a broken response -> 502; a timeout -> 504.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import IO, Any, Protocol

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
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
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure
from twisted.web._newclient import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.client import URI, Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.request import HeaderList

#: Request headers the client never forwards itself: the body producer frames the
#: body (Content-Length, or chunked when the length is unknown).
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})

#: Response headers never passed to the client, on top of those Twisted's parser
#: already keeps apart (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
#: Upgrade, Content-Length, Proxy-Connection).
_RESPONSE_HOP = frozenset({b"proxy-authenticate", b"proxy-authorization"})

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
class _UnverifiedCreator:
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


def _client_context() -> SSL.Context:
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
        self.cancel()
        self.phase = phase
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


# ------------------------------------------------------------------------- response


class _BodyReceiver(TxProtocol):
    def __init__(self, response: UpstreamResponse, sink: ResponseSink) -> None:
        self._response = response
        self._sink = sink

    def dataReceived(self, data: bytes) -> None:
        self._response._on_body_data()
        self._sink.write(data)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        self._response._on_body_end()
        if not self._response._abandoned and reason.check(ResponseDone, PotentialDataLoss):
            self._sink.finish()
        else:
            self._sink.fail(reason)


@implementer(IPushProducer)
class UpstreamResponse:
    """Status and headers of an upstream response; its body is delivered on demand.

    It is also the push producer the client side registers, so a slow client
    pauses the upstream socket instead of buffering the body in memory.
    """

    def __init__(self, response: IResponse, deadline: _Deadline, read_timeout: float) -> None:
        self._response = response
        self._deadline = deadline
        self._read_timeout = read_timeout
        self.status: int = response.code
        self.reason: bytes = response.phrase
        self.length: int | None = response.length if isinstance(response.length, int) else None
        items: list[tuple[str, str]] = []
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() in _RESPONSE_HOP:
                continue
            sname = name.decode("latin-1")
            items.extend((sname, v.decode("latin-1")) for v in values)
        self.headers = HeaderList(items)
        self._transport: Any = None
        self._abandoned = False
        self._ended = False

    def deliver(self, sink: ResponseSink) -> None:
        """Stream the body into ``sink``; the read timeout applies between chunks."""
        receiver = _BodyReceiver(self, sink)
        self._deadline.start("read", self._read_timeout)
        self._response.deliverBody(receiver)
        self._transport = receiver.transport

    def _on_body_data(self) -> None:
        self._deadline.touch(self._read_timeout)

    def _on_body_end(self) -> None:
        self._ended = True
        self._deadline.cancel()

    def timed_out(self) -> None:
        """The read timeout fired mid-body: drop the upstream connection."""
        self.stopProducing()

    def pauseProducing(self) -> None:
        if self._transport is not None:
            self._transport.pauseProducing()
            # The client is slow, not the upstream: no read timeout while paused.
            self._deadline.cancel()

    def resumeProducing(self) -> None:
        if self._transport is not None and not self._ended:
            self._deadline.start("read", self._read_timeout)
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """Abandon the body (client gone, or timed out): the connection is not reused."""
        self._deadline.cancel()
        if not self._ended:
            self._abandoned = True
        transport = self._transport
        if transport is not None:
            self._transport = None
            if self._abandoned:
                # Close the socket: the rest of this body must never be read as the
                # start of the next response on a pooled connection.
                transport.loseConnection()
            else:
                transport.stopProducing()


# ------------------------------------------------------------------------- endpoints


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Endpoint factory of one request: tells the request when it is connected."""

    def __init__(self, client: UpstreamClient, on_connected: Callable[[], None]) -> None:
        self._client = client
        self._on_connected = on_connected
        #: True when this request opened a new connection (not one from the pool).
        self.connecting = False

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _WatchedEndpoint(self._client.endpoint_for(uri.scheme, uri.host, uri.port), self)


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    def __init__(self, inner: IStreamClientEndpoint, owner: _Endpoints) -> None:
        self._inner = inner
        self._owner = owner

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        self._owner.connecting = True
        d = self._inner.connect(protocolFactory)

        def connected(proto: object) -> object:
            self._owner._on_connected()
            return proto

        return d.addCallback(connected)


class _QuietFactory(_HTTP11ClientFactory):
    """No "Starting factory" log line per upstream connection (the hot path)."""

    noisy = False


class _Pool(HTTPConnectionPool):
    _factory = _QuietFactory


class UpstreamClient:
    """One per node: the keep-alive pool and the request logic.

    Args:
        reactor: provides TCP, time and the name resolver (``nameResolver``).
        clock: the node's timer owner (timeouts).
        keepalive: idle connections kept per upstream (``upstream_keepalive``);
            0 closes every connection after its response, like Kong 0.9.
        connect_timeout, send_timeout, read_timeout: milliseconds.
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
        self.pool = _Pool(reactor, persistent=keepalive > 0)
        self.pool.maxPersistentPerHost = max(keepalive, 1)
        self.pool.cachedConnectionTimeout = int(idle_timeout)
        self.connect_timeout = connect_timeout / 1000.0
        self.send_timeout = send_timeout / 1000.0
        self.read_timeout = read_timeout / 1000.0
        self._tls_context = _client_context()
        # Endpoints are stateless and reusable; building one costs an IDNA round trip.
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpoint_for(self, scheme: bytes, host: bytes, port: int) -> IStreamClientEndpoint:
        """A TCP (or TCP+TLS) endpoint; host names resolve off the reactor thread."""
        key = (scheme, host, port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if len(self._endpoints) > 4096:
                self._endpoints.clear()
            endpoint = self._endpoints[key] = self._make_endpoint(scheme, host, port)
        return endpoint

    def _make_endpoint(self, scheme: bytes, host: bytes, port: int) -> IStreamClientEndpoint:
        shost = host.decode("ascii")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, host, port, timeout=self.connect_timeout or 30.0
        )
        if scheme == b"https":
            endpoint = wrapClientTLS(_UnverifiedCreator(self._tls_context, shost), endpoint)
        return endpoint

    async def request(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: IO[bytes] | None = None,
        length: int = 0,
    ) -> UpstreamResponse:
        """Send one request; returns once the response headers arrived.

        Raises:
            UpstreamError: 502 or 504 (SPEC §3.5), never anything else but
                ``CancelledError`` (the client went away).
        """
        clock = self._clock
        holder: dict[str, Deferred[Any]] = {}
        deadline = _Deadline(clock, lambda: holder["d"].cancel() if "d" in holder else None)

        def body_progress() -> None:
            deadline.touch(self.send_timeout)

        def start_sending() -> None:
            if producer is not None:
                deadline.start("send", self.send_timeout)
            else:
                deadline.start("read", self.read_timeout)

        producer: FileBodyProducer | None = None
        if body is not None and length > 0:
            producer = FileBodyProducer(body, length, body_progress)

        theaders = Headers()
        for name, value in headers:
            bname = name.encode("latin-1")
            if bname.lower() in _FRAMING:
                continue
            theaders.addRawHeader(bname, value.encode("latin-1"))

        endpoints = _Endpoints(self, lambda: start_sending())
        agent = Agent.usingEndpointFactory(self._reactor, endpoints, pool=self.pool)
        try:
            d = agent.request(method.encode("ascii"), url.encode("latin-1"), theaders, producer)
        except Exception as exc:  # a malformed URL or method: the upstream never sees it
            raise UpstreamError(502, f"invalid upstream request: {exc}") from exc
        holder["d"] = d
        if not endpoints.connecting:
            # A pooled connection: sending starts now.  Otherwise the connect timeout is
            # the endpoint's, and send/read start once connected.
            start_sending()
        if producer is not None:
            # Body fully written: from now on we wait for the response (read timeout).
            original = producer.startProducing

            def start_and_watch(consumer: IConsumer) -> Deferred[None]:
                done = original(consumer)

                def sent(result: object) -> object:
                    if not deadline.fired:
                        deadline.start("read", self.read_timeout)
                    return result

                done.addBoth(sent)
                return done

            producer.startProducing = start_and_watch  # type: ignore[method-assign]

        try:
            response: IResponse = await d
        except CancelledError:
            if deadline.fired:
                raise UpstreamError(504, f"upstream timed out ({deadline.phase})") from None
            raise
        except Exception as exc:
            deadline.cancel()
            if deadline.fired:
                raise UpstreamError(504, f"upstream timed out ({deadline.phase})") from exc
            if _was_cancelled(exc):
                # We were cancelled (the client left) while the request was in flight.
                raise CancelledError() from exc
            raise classify(Failure(exc)) from exc
        deadline.cancel()
        result = UpstreamResponse(response, deadline, self.read_timeout)
        deadline._fire = result.timed_out
        return result

    def close(self) -> Deferred[None]:
        """Close every idle pooled connection (node stopping)."""
        d: Deferred[None] = self.pool.closeCachedConnections()
        return d


def _was_cancelled(exc: BaseException) -> bool:
    reasons = getattr(exc, "reasons", None)
    return bool(reasons) and all(
        isinstance(r, Failure) and r.check(CancelledError) for r in reasons or ()
    )


def classify(failure: Failure) -> UpstreamError:
    """Map a Twisted client failure to the error page it deserves (SPEC §3.5)."""
    exc = failure.value
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, ResponseFailed | RequestTransmissionFailed | ResponseNeverReceived):
        reasons = getattr(exc, "reasons", [])
        for inner in reasons:
            if isinstance(inner, Failure) and inner.check(ierror.TimeoutError, TimeoutError):
                return UpstreamError(504, "upstream timed out")
        return UpstreamError(502, f"upstream failed: {exc!r}")
    if isinstance(exc, ierror.TimeoutError | TimeoutError):
        return UpstreamError(504, "upstream connect timed out")
    if isinstance(exc, RequestNotSent):
        return UpstreamError(502, "request not sent")
    if isinstance(exc, ierror.DNSLookupError):
        return UpstreamError(502, f"upstream name not resolved: {exc}")
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


async def open_tunnel(client: UpstreamClient, scheme: str, host: str, port: int) -> Tunnel:
    """Connect a :class:`Tunnel` to an upstream (connect timeout, 502/504 mapping)."""
    from twisted.internet.protocol import Factory

    endpoint = client.endpoint_for(scheme.encode("ascii"), host.encode("idna"), port)
    try:
        proto = await endpoint.connect(Factory.forProtocol(Tunnel))
    except Exception as exc:
        raise classify(Failure(exc)) from exc
    assert isinstance(proto, Tunnel)
    return proto
