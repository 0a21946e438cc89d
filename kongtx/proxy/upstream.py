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
  unreachable, an invalid response -> 502; a timeout -> 504
  (:func:`kongtx.proxy.errors.connect_error` for a failed connect).

The parts: :mod:`kongtx.proxy.upstream_request` (URL, request head, body producer),
:mod:`kongtx.proxy.exchange` (one request and its response on a connection),
:mod:`kongtx.proxy.upstream_response` (the response, its listener and sink),
:mod:`kongtx.proxy.connection` (a pooled connection and its timer),
:mod:`kongtx.proxy.upstream_tls` (endpoints, TLS without verification) and
:mod:`kongtx.proxy.tunnel` (upgraded requests); this module holds the pool.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.connection import PoolKey, UpstreamConnection, UpstreamConnectionFactory
from kongtx.proxy.direct_write import turn_sender
from kongtx.proxy.errors import UpstreamError, connect_error
from kongtx.proxy.exchange import Exchange
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream_request import FileBodyProducer, Origin, build_head, split_url
from kongtx.proxy.upstream_response import ResponseListener, StaleConnection, UpstreamResponse
from kongtx.proxy.upstream_tls import client_tls_context, upstream_endpoint

log = logger("kongtx.proxy.upstream")


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
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        # The pool of the last key taken from (one API's upstream, request after
        # request): found without building and hashing a key tuple.
        self._last_scheme = ""
        self._last_host = ""
        self._last_port = 0
        self._last_name = ""
        self._last_idle: list[UpstreamConnection] | None = None
        #: bodyless requests' heads, sent together at the end of the reactor turn
        self.send_at_turn_end = turn_sender(clock).send

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
        return upstream_endpoint(
            self._reactor, key, self.connect_timeout or 30.0, self._tls_context
        )

    # ------------------------------------------------------------ pool

    def _idle_for(self, key: PoolKey) -> list[UpstreamConnection]:
        """The idle list of ``key``'s pool (kept for the client's life: connections
        remember theirs)."""
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        return idle

    def _take(self, key: PoolKey) -> UpstreamConnection | None:
        scheme, host, port, name = key
        idle = self._last_idle
        if (
            idle is None
            or port != self._last_port
            or host != self._last_host
            or scheme != self._last_scheme
            or name != self._last_name
        ):
            idle = self._last_idle = self._idle_for(key)
            self._last_scheme, self._last_host, self._last_port, self._last_name = key
        while idle:
            conn = idle.pop()
            if not conn.closing:
                conn.reused = True
                return conn
        return None

    def _release(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        timer = conn.timer_for(self._clock)
        if conn.closing:
            timer.cancel()
            return
        idle = conn.idle
        if idle is None:
            idle = conn.idle = self._idle_for(conn.key)
        if len(idle) >= self.keepalive:
            timer.cancel()
            conn.close()
            return
        idle.append(conn)
        timer.start("idle", self.idle_timeout)

    def _forget(self, conn: UpstreamConnection) -> None:
        idle = conn.idle
        if idle and conn in idle:
            idle.remove(conn)
        if conn.timer is not None:
            conn.timer.cancel()

    async def _connect(self, key: PoolKey) -> UpstreamConnection:
        endpoint = self._endpoint(key)
        try:
            conn = await endpoint.connect(UpstreamConnectionFactory(key, self))
        except Exception as exc:
            raise connect_error(exc) from exc
        assert isinstance(conn, UpstreamConnection)
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
        pool: bool = True,
        origin: Origin | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response headers arrived.

        The body is either ``body`` (a rewindable file of ``length`` bytes) or
        ``stream`` (a producer still receiving it from the client: see
        ``kongtx.proxy.http.BodyPipe``; framed chunked when its length is unknown).

        ``address`` (a balanced peer's ``(ip, port)``) is where the connection goes;
        the URL, the ``Host`` header and TLS's SNI keep the upstream's name, and the
        keep-alive pool is keyed by the address (and that name, for TLS).
        ``pool=False``: on a new connection (a retry after a stale pooled one).
        ``origin``: the one ``url`` starts with, split already (the API's).

        Raises:
            ConnectError: the connection could not be made (nothing was sent).
            UpstreamError: 502 or 504 (SPEC §3.5), never anything else but
                ``CancelledError`` (the client went away).
        """
        try:
            scheme, host, port, target = split_url(url, origin)
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
            exchange = Exchange(self, conn, method, head, stream, chunked=declared is None)
            stream.on_progress = exchange.progress
            try:
                return await exchange.start()
            except StaleConnection:
                raise UpstreamError(502, "upstream closed the connection") from None
        has_body = body is not None and length > 0
        head = build_head(method, target, headers, length if has_body else None)
        for attempt in (0, 1) if pool else (1,):
            pooled = self._take(key) if attempt == 0 else None
            conn = pooled if pooled is not None else await self._connect(key)
            try:
                exchange = self._exchange(
                    conn, method, head, body if has_body else None, length, None
                )
                return await exchange.start()
            except StaleConnection:
                log.debug(
                    "pooled connection to {host}:{port} was closed; retrying", host=host, port=port
                )
                continue
        raise UpstreamError(502, "upstream closed the connection")

    def start_pooled(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: IO[bytes] | None,
        length: int,
        origin: Origin | None = None,
    ) -> Deferred[UpstreamResponse] | None:
        """:meth:`request` on a pooled connection, without a coroutine (hot path).

        ``None`` when no pooled connection is at hand (or the URL is no upstream
        URL): call :meth:`request`.  Else the exchange's own Deferred; a pooled
        connection found stale is retried once on a new one, as :meth:`request`
        does.  Raises ``UpstreamError`` for a header that must not go upstream.
        """
        exchange = self.pooled_exchange(method, url, headers, body, length, origin=origin)
        if exchange is None:
            return None
        result = exchange.start()
        result.addErrback(self._retry_stale, (method, url, headers, body, length, origin))
        return result

    def pooled_exchange(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: IO[bytes] | None,
        length: int,
        listener: ResponseListener | None = None,
        address: tuple[str, int] | None = None,
        origin: Origin | None = None,
    ) -> Exchange | None:
        """The exchange of a request on a pooled connection, not begun (hot path).

        ``None`` when no pooled connection is at hand (or the URL is no upstream URL).
        With a ``listener`` (told of the response or the failure directly, no
        Deferred), a ``StaleConnection`` failure is the listener's to retry
        (:meth:`retry_on_new_connection`).  ``address``: a balanced peer's, pooled
        as :meth:`request` pools it; ``origin``: as :meth:`request`'s.  Raises
        ``UpstreamError`` for a header that must not go upstream.
        """
        try:
            scheme, host, port, target = split_url(url, origin)
        except ValueError:
            return None
        has_body = body is not None and length > 0
        head = build_head(method, target, headers, length if has_body else None)
        conn = self._take(
            (scheme, host, port, "") if address is None else (scheme, address[0], address[1], host)
        )
        if conn is None:
            return None
        return self._exchange(conn, method, head, body if has_body else None, length, listener)

    def _exchange(
        self,
        conn: UpstreamConnection,
        method: str,
        head: bytes,
        body: IO[bytes] | None,
        length: int,
        listener: ResponseListener | None,
    ) -> Exchange:
        """One exchange on ``conn``, not begun: the head, then ``body`` (replayable) if any."""
        producer: FileBodyProducer | None = None
        if body is not None:
            body.seek(0)
            producer = FileBodyProducer(body, length, _no_progress)
        exchange = Exchange(self, conn, method, head, producer, listener=listener)
        if producer is not None:
            producer._on_progress = exchange.progress
        return exchange

    def retry_on_new_connection(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: IO[bytes] | None,
        length: int,
        origin: Origin | None = None,
    ) -> Deferred[UpstreamResponse]:
        """:meth:`request` on a new connection (after a stale pooled one); ``origin``:
        the API's, split already, as on the first attempt."""
        log.debug("pooled connection for {url} was closed; retrying", url=url)
        return Deferred.fromCoroutine(
            self.request(method, url, headers, body, length, pool=False, origin=origin)
        )

    def _retry_stale(
        self,
        failure: Failure,
        request: tuple[str, str, HeaderList, IO[bytes] | None, int, Origin | None],
    ) -> Deferred[UpstreamResponse]:
        """After a stale pooled connection: ``request`` again, on a new connection."""
        failure.trap(StaleConnection)
        return self.retry_on_new_connection(*request)

    def close(self) -> Deferred[None]:
        """Close every idle pooled connection (node stopping)."""
        for idle in self._idle.values():
            conns = list(idle)
            idle.clear()  # the lists stay: connections and _take remember theirs
            for conn in conns:
                conn.close()
        return Deferred.fromCoroutine(_done())


def _no_progress() -> None:
    return None


async def _done() -> None:
    return None


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
