# -*- test-case-name: tests.unit.test_pipeline -*-
"""One proxied request, start to end: resolve -> plugins -> upstream -> respond.

DESIGN.md §3.  The pipeline never sees twisted.web: a front-end (today
``kongtx.proxy.resource``; a leaner protocol later) hands it an
:class:`IncomingRequest` and a :class:`Downstream` to write to, so the same
code serves whatever parses HTTP.  Plugins see a :class:`ProxyContext`, which
implements ``kongtx.plugins.base.RequestContext``.

Order of events, as in Kong 0.9:

1. the router (from the node cache, rebuilt only after an ``apis`` change) picks
   the API, or the request ends in the SPEC §3.1 404 and no plugin runs;
2. the access phase of the API's plugin chain (a plugin may answer itself);
3. the upstream request is built from what the access phase left (SPEC §3.2) and
   sent; ``X-Kong-Proxy-Latency`` measures steps 1-3 up to now;
4. response headers (minus hop-by-hop) + ``Via`` + latency headers, then the
   header_filter phase; the body is streamed through body_filter;
5. the log phase runs on the next reactor turn after the response finished, so it
   never delays the client, and it runs for every request that matched an API,
   rejected ones included (our deliberate difference from Kong 0.9).
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from typing import IO, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from kongtx import SERVER_NAME
from kongtx.balancer.registry import Balancer, Balancers, Pick, _Missing, lookup_host
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.errors import (
    JSON_TYPE,
    UpstreamError,
    error_page,
    json_body,
)
from kongtx.proxy.exchange import UpstreamResponse
from kongtx.proxy.request import (
    HeaderList,
    TrustedIps,
    build_upstream_request,
    parse_query,
    strip_hop_by_hop,
)
from kongtx.proxy.tunnel import open_tunnel
from kongtx.proxy.upstream import ConnectError, UpstreamClient
from kongtx.proxy.upstream_request import build_head, split_url
from kongtx.router import CACHE_KEY, Match, Router, not_found_body
from kongtx.store.interface import Row

log = logger("kongtx.proxy")

#: Retries of a balanced request after a connect failure (Kong 0.10's API ``retries`` default).
BALANCER_RETRIES = 5
#: Kong 1.x's answer when every peer of an upstream is unhealthy (or it has none).
NO_PEER_MESSAGE = "failure to get a peer from the ring-balancer"

#: Response headers the proxy sets itself (whatever the upstream sent under these names).
_OURS_ON_RESPONSES = frozenset(
    {"content-length", "via", "x-kong-upstream-latency", "x-kong-proxy-latency"}
)


# --------------------------------------------------------------------- collaborators


class Downstream(Protocol):
    """The client side of one request, as a front-end provides it."""

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Status line and headers (the front-end adds framing if none is given)."""

    def write(self, data: bytes) -> None:
        """Body bytes."""

    def finish(self) -> None:
        """The response is complete."""

    def abort(self) -> None:
        """Cut the connection: the response cannot be completed honestly."""

    def register_producer(self, producer: IPushProducer) -> None:
        """Let the client's backpressure pause ``producer``."""

    def unregister_producer(self) -> None:
        """Undo :meth:`register_producer`."""

    def splice(self, tunnel: Any) -> None:
        """Hand the raw connection to ``tunnel`` (an upgraded WebSocket)."""

    @property
    def gone(self) -> bool:
        """The client disconnected."""


class IncomingRequest:
    """A parsed client request, front-end independent."""

    __slots__ = (
        "body",
        "body_length",
        "connection_id",
        "connection_requests",
        "headers",
        "http_version",
        "method",
        "peer_ip",
        "scheme",
        "server_addr",
        "server_port",
        "stream",
        "uri",
    )

    def __init__(
        self,
        method: str,
        uri: str,
        headers: HeaderList,
        peer_ip: str,
        scheme: str = "http",
        body: IO[bytes] | None = None,
        body_length: int = 0,
        server_addr: str = "",
        server_port: int = 0,
        connection_id: int = 0,
        connection_requests: int = 1,
        stream: BodyStream | None = None,
        http_version: str = "HTTP/1.1",
    ) -> None:
        #: a body still arriving from the client (large or chunked), else ``None``
        self.stream = stream
        #: the request line's version (``HTTP/1.0`` or ``HTTP/1.1``): hmac-auth signs it
        self.http_version = http_version
        self.server_addr = server_addr
        self.server_port = server_port
        self.connection_id = connection_id
        self.connection_requests = connection_requests
        self.method = method
        self.uri = uri
        self.headers = headers
        self.peer_ip = peer_ip
        self.scheme = scheme
        self.body = body
        self.body_length = body_length


class BodyStream(Protocol):
    """A request body still arriving from the client (``kongtx.proxy.http.BodyPipe``)."""

    #: the client's Content-Length, ``None`` for a chunked body
    declared_length: int | None
    received: int

    def startProducing(self, consumer: Any) -> Deferred[None]: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...
    async def read_all(self) -> bytes: ...


class PluginChain(Protocol):
    """The compiled plugins of one API (kongtx.plugins.runtime)."""

    def access(self, ctx: Any) -> Awaitable[None] | None: ...
    def header_filter(self, ctx: Any) -> Awaitable[None] | None: ...
    def body_filter(self, ctx: Any, chunk: bytes, last: bool) -> bytes: ...
    def log(self, ctx: Any) -> Awaitable[None] | None: ...


class ChainSource(Protocol):
    """Gives the plugin chain for an API (kongtx.plugins.runtime)."""

    def cached_chain(self, api: Row) -> PluginChain | None: ...
    def chain_for(self, api: Row) -> Awaitable[PluginChain]: ...


class ApiSource(Protocol):
    """What the router is loaded from (the DAO)."""

    def find_all(self, collection: str, filters: Mapping[str, Any]) -> Awaitable[list[Row]]: ...


class CacheLike(Protocol):
    def peek(self, key: str) -> tuple[bool, Any]: ...
    def get_or_load(
        self, key: str, loader: Any, ttl: float | None = ..., negative: bool = ...
    ) -> Awaitable[Any]: ...


class RouterSource:
    """The router, kept in the node cache under ``ALL_APIS_BY_DIC``.

    Hot path: one synchronous ``peek``.  After an ``apis`` change the invalidation
    drops the key and the next request rebuilds the router (one datastore query,
    shared by every request that arrives meanwhile).
    """

    def __init__(self, cache: CacheLike, dao: ApiSource) -> None:
        self._cache = cache
        self._dao = dao

    def peek(self) -> Router | None:
        hit, value = self._cache.peek(CACHE_KEY)
        return value if hit and isinstance(value, Router) else None

    async def get(self) -> Router:
        router = self.peek()
        if router is not None:
            return router

        async def load() -> Router:
            apis = await self._dao.find_all("apis", {})
            return Router.build(apis)

        result: Router = await self._cache.get_or_load(CACHE_KEY, load, None, False)
        return result


async def _maybe_await(result: object) -> None:
    if result is not None and inspect.isawaitable(result):
        await result


# --------------------------------------------------------------------- context


class ProxyContext:
    """One proxied request as plugins see it (``kongtx.plugins.base.RequestContext``).

    Also carries what the log phase reports (Kong's basic serializer): sizes,
    latencies, the upstream URL.
    """

    def __init__(
        self,
        api: Row,
        match: Match,
        incoming: IncomingRequest,
        client_ip: str,
        path: str,
        raw_query: str,
        started: float,
    ) -> None:
        self.api = api
        self.match = match
        self.method = incoming.method
        self.scheme = incoming.scheme
        self.path = path
        self.raw_query = raw_query
        self.request_uri = incoming.uri
        self.http_version = incoming.http_version
        self.query: list[tuple[str, str | None]] = parse_query(raw_query)
        self.headers: HeaderList = incoming.headers.copy()
        self.client_ip = client_ip
        self.peer_ip = incoming.peer_ip
        self.server_addr = incoming.server_addr
        self.server_port = incoming.server_port
        self.connection_id = incoming.connection_id
        self.connection_requests = incoming.connection_requests
        self.shared: dict[str, Any] = {}
        self.consumer: Row | None = None
        self.credential: Row | None = None
        self.status = 0
        self.response_headers = HeaderList()
        self.upstream_url: str | None = None
        self.upstream_host: str | None = None
        #: epoch seconds when the request arrived
        self.started_at = started
        #: ms: start -> end of access phase; end of access -> upstream headers; total
        self.proxy_latency: int | None = None
        self.upstream_latency: int | None = None
        self.request_latency: int | None = None
        self.request_size = incoming.body_length
        self.response_size = 0
        self._incoming = incoming
        self._body: IO[bytes] | None = incoming.body
        self._body_length = incoming.body_length
        self._stream: BodyStream | None = incoming.stream
        if incoming.stream is not None and incoming.stream.declared_length is not None:
            self.request_size = incoming.stream.declared_length
        self._responded = False
        self._response_body: bytes = b""

    async def read_body(self) -> bytes:
        """The whole request body (read from its spool; position restored).

        A body still streaming in is waited for and kept in memory from then on.
        """
        if self._stream is not None:
            data = await self._stream.read_all()
            self._stream = None
            self._body = io.BytesIO(data)
            self._body_length = self.request_size = len(data)
            return data
        body = self._body
        if body is None:
            return b""
        body.seek(0)
        data = body.read(self._body_length)
        body.seek(0)
        return data

    def set_body(self, body: bytes) -> None:
        """Replace the body sent upstream; its length frames it."""
        if self._stream is not None:
            self._stream.stopProducing()  # the client's body is replaced: drop it
            self._stream = None
        self._body = io.BytesIO(body)
        self._body_length = len(body)
        self.headers.remove("content-length")
        self.headers.remove("transfer-encoding")

    def set_upstream_host(self, host: str) -> None:
        self.upstream_host = host

    def respond(
        self,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A Kong-generated answer (a plugin stops the request)."""
        self._responded = True
        self.status = status
        out = HeaderList()
        if isinstance(body, Mapping):
            data = json_body(body)
            out.set("Content-Type", JSON_TYPE)
        else:
            data = body or b""
        for name, value in (headers or {}).items():
            out.set(name, value)
        out.set("Server", SERVER_NAME)
        self.response_headers = out
        self._response_body = data

    @property
    def responded(self) -> bool:
        return self._responded

    @property
    def body_stream(self) -> tuple[IO[bytes] | None, int]:
        """The (possibly replaced) request body and its length."""
        return self._body, self._body_length


# --------------------------------------------------------------------- pipeline


class _BodyRelay:
    """Upstream body -> body_filter -> client, with the end reported on ``done``."""

    def __init__(self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream) -> None:
        self.ctx = ctx
        self.chain = chain
        self.down = down
        self.done: Deferred[bool] = Deferred()
        self.failure: Failure | None = None

    def write(self, data: bytes) -> None:
        if self.chain is not None:
            data = self.chain.body_filter(self.ctx, data, False)
        if data and not self.down.gone:
            self.ctx.response_size += len(data)
            self.down.write(data)

    def finish(self) -> None:
        if self.chain is not None:
            tail = self.chain.body_filter(self.ctx, b"", True)
            if tail and not self.down.gone:
                self.ctx.response_size += len(tail)
                self.down.write(tail)
        if not self.done.called:
            self.done.callback(True)

    def fail(self, reason: Failure) -> None:
        self.failure = reason
        if not self.done.called:
            self.done.callback(False)


class ProxyPipeline:
    """resolve -> plugins -> upstream -> respond, for any front-end."""

    def __init__(
        self,
        routers: RouterSource,
        client: UpstreamClient,
        clock: Clock,
        *,
        trusted_ips: TrustedIps | None = None,
        plugins: ChainSource | None = None,
        balancers: Balancers | None = None,
    ) -> None:
        self.routers = routers
        #: upstreams by name (an API whose upstream_url host names one is balanced)
        self.balancers = balancers
        #: upstream_url -> its host, parsed once per URL
        self._upstream_names: dict[str, str] = {}
        self.client = client
        self.clock = clock
        self.trusted_ips = trusted_ips or TrustedIps()
        self.plugins = plugins
        self._log_queue: list[tuple[PluginChain, ProxyContext]] = []
        #: called with each routed request's context once it is answered (metrics);
        #: an empty list costs one loop test per request
        self.observers: list[Callable[[ProxyContext], None]] = []
        self._date_second = -1
        self._date_text = ""

    # ----------------------------------------------------------------- entry

    async def handle(self, incoming: IncomingRequest, down: Downstream) -> None:
        """Serve one request to completion (or until the client goes away)."""
        started = self.clock.seconds()
        headers = incoming.headers
        host_values = headers.get_all("host") + headers.get_all("x-host-override")
        uri = incoming.uri
        if not uri.startswith("/"):
            # absolute-form (GET http://host/path): its host comes first (RFC 7230 §5.4)
            target_host, uri = split_absolute_form(uri)
            incoming.uri = uri
            if target_host:
                host_values.insert(0, target_host)
        q = uri.find("?")
        path, raw_query = (uri, "") if q < 0 else (uri[:q], uri[q + 1 :])

        router = self.routers.peek()
        if router is None:
            router = await self.routers.get()
        match = router.match(host_values, path)
        if match is None:
            body = not_found_body(host_values, path)
            self._send_whole(
                down, 404, [("Content-Type", JSON_TYPE), ("Server", SERVER_NAME)], body
            )
            return

        client_ip = self.trusted_ips.client_ip(incoming.peer_ip, headers.get_all("x-forwarded-for"))
        ctx = ProxyContext(match.api, match, incoming, client_ip, path, raw_query, started)
        chain: PluginChain | None = None
        try:
            if self.plugins is not None:
                chain = self.plugins.cached_chain(match.api)
                if chain is None:
                    chain = await self.plugins.chain_for(match.api)
            if chain is not None:
                pending = chain.access(ctx)  # None when every plugin answered synchronously
                if pending is not None:
                    await pending
            if ctx.responded:
                await self._send_generated(ctx, chain, down)
            else:
                await self._proxy(ctx, chain, down)
        finally:
            ctx.request_latency = self._ms_since(started)
            if chain is not None and ctx.status:
                self._queue_log(chain, ctx)
            for observe in self.observers:
                observe(ctx)

    # ----------------------------------------------------------------- helpers

    def _http_date(self) -> str:
        """An HTTP ``Date`` for now, computed at most once per second (hot path)."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date_text = formatdate(now, usegmt=True)
        return self._date_text

    def _ms_since(self, t: float) -> int:
        return max(0, int((self.clock.seconds() - t) * 1000))

    def _send_whole(
        self, down: Downstream, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        if down.gone:
            return
        headers = [h for h in headers if h[0].lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        if not any(h[0].lower() == "date" for h in headers):
            headers.insert(0, ("Date", self._http_date()))
        down.send_head(status, headers)
        if body:
            down.write(body)
        down.finish()

    async def _send_generated(
        self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream
    ) -> None:
        """A plugin answered in access: header_filter and body_filter still run."""
        if chain is not None:
            await _maybe_await(chain.header_filter(ctx))
        body = ctx._response_body
        if chain is not None:
            body = chain.body_filter(ctx, body, False) + chain.body_filter(ctx, b"", True)
        ctx.response_size = len(body)
        self._send_whole(down, ctx.status, ctx.response_headers.items(), body)

    def _send_error(
        self, ctx: ProxyContext | None, down: Downstream, status: int, accept: str | None
    ) -> None:
        content_type, body = error_page(status, accept)
        if ctx is not None:
            ctx.status = status
            ctx.response_size = len(body)
        self._send_whole(
            down, status, [("Content-Type", content_type), ("Server", SERVER_NAME)], body
        )

    def _queue_log(self, chain: PluginChain, ctx: ProxyContext) -> None:
        """Run the log phase on a later reactor turn, never before the response is out.

        One timer serves every request that finished in the same turn.
        """
        self._log_queue.append((chain, ctx))
        if len(self._log_queue) == 1:
            self.clock.call_later(0, self._run_logs)

    def _run_logs(self) -> None:
        queue, self._log_queue = self._log_queue, []
        for chain, ctx in queue:
            self._run_log(chain, ctx)

    def _run_log(self, chain: PluginChain, ctx: ProxyContext) -> None:
        try:
            pending = chain.log(ctx)
        except Exception:
            log.failure("log phase failed for {uri}", uri=ctx.request_uri)
            return
        if pending is not None and inspect.isawaitable(pending):

            async def run() -> None:
                try:
                    await pending
                except Exception:
                    log.failure("log phase failed for {uri}", uri=ctx.request_uri)

            Deferred.fromCoroutine(run())

    # ----------------------------------------------------------------- proxying

    async def _proxy(self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream) -> None:
        incoming = ctx._incoming
        upgrade = _is_upgrade(ctx.headers) and incoming.method == "GET"
        req = build_upstream_request(
            api=ctx.api,
            match=ctx.match,
            method=ctx.method,
            uri=ctx.path,
            query=ctx.query,
            headers=strip_hop_by_hop(ctx.headers, keep_upgrade=upgrade),
            peer_ip=ctx.peer_ip,
            client_ip=ctx.client_ip,
            scheme=ctx.scheme,
            host_override=ctx.upstream_host,
        )
        ctx.upstream_url = req.url
        balancer: Balancer | None = None
        if self.balancers is not None:
            found = self._peek_balancer(ctx.api)
            balancer = await self._load_balancer(ctx.api) if isinstance(found, _Missing) else found
        access_done = self.clock.seconds()
        ctx.proxy_latency = self._ms_since(ctx.started_at)
        accept = incoming.headers.get("accept")

        if upgrade:
            await self._tunnel(ctx, req.url, req.method, req.headers, down, accept, balancer)
            return

        body, length = ctx.body_stream
        if body is not None:
            body.seek(0)
        pick: Pick | None = None
        try:
            if balancer is None:
                response = await self.client.request(
                    req.method, req.url, req.headers, body, length, stream=ctx._stream
                )
            else:
                picked = await self._balanced_request(ctx, balancer, req, body, length)
                if picked is None:
                    self._send_no_peer(ctx, down)
                    return
                pick, response = picked
        except UpstreamError as e:
            log.info(
                "upstream error {status} for {url}: {reason}",
                status=e.status,
                url=req.url,
                reason=e.reason,
            )
            self._send_error(ctx, down, e.status, accept)
            return
        try:
            ctx.upstream_latency = max(0, int((self.clock.seconds() - access_done) * 1000))
            await self._relay(ctx, chain, down, response)
        finally:
            self._release(balancer, pick)

    # ----------------------------------------------------------------- balancing

    def _upstream_name(self, api: Row) -> str:
        url = api.get("upstream_url") or ""
        name = self._upstream_names.get(url)
        if name is None:
            if len(self._upstream_names) > 4096:
                self._upstream_names.clear()
            name = self._upstream_names[url] = lookup_host(url)
        return name

    def _peek_balancer(self, api: Row) -> Balancer | None | _Missing:
        """The balancer of the upstream the API's upstream_url host names, from the cache.

        Hot path for every API, synchronous: one dict lookup and one cache peek (a
        negative ``upstreams:<host>`` entry when the host is no upstream).
        """
        assert self.balancers is not None
        return self.balancers.peek(self._upstream_name(api))

    async def _load_balancer(self, api: Row) -> Balancer | None:
        """:meth:`_peek_balancer` on a cache miss: load the rows, resolve the targets."""
        balancers = self.balancers
        assert balancers is not None
        name = self._upstream_name(api)
        try:
            return await balancers.get(name)
        except CancelledError:
            raise
        except Exception as e:
            # The datastore is unreachable and the rows are not cached: proxy as an
            # API without upstream would be (a name that is only an upstream then
            # fails to resolve: 502), rather than fail every API with a cold entry.
            log.warn(
                "could not load upstream {name}: {error}; proxying without balancing",
                name=name,
                error=e,
            )
            return None

    async def _balanced_request(
        self,
        ctx: ProxyContext,
        balancer: Balancer,
        req: Any,
        body: IO[bytes] | None,
        length: int,
    ) -> tuple[Pick, UpstreamResponse] | None:
        """Send to a peer of ``balancer``; a failed connect is retried on another.

        Only a connect failure or connect timeout (nothing sent yet) of a replayable
        body is retried, at most :data:`BALANCER_RETRIES` times, never on the same
        address twice in a row when another is healthy.  Every attempt's outcome
        goes to the outcome listeners.  ``None``: no healthy peer.
        """
        balancers = self.balancers
        assert balancers is not None
        upstream = balancer.upstream
        avoid: str | None = None
        attempt = 0
        while True:
            pick = balancer.pick(ctx, avoid)
            if pick is None:
                return None
            if body is not None:
                body.seek(0)
            try:
                response = await self.client.request(
                    req.method,
                    req.url,
                    req.headers,
                    body,
                    length,
                    stream=ctx._stream,
                    address=(pick.host, pick.port),
                )
            except UpstreamError as e:
                balancer.release(pick)
                balancers.report(upstream, pick, "timeout" if e.status == 504 else "tcp_failure")
                if (
                    isinstance(e, ConnectError)
                    and ctx._stream is None
                    and attempt < BALANCER_RETRIES
                ):
                    attempt += 1
                    avoid = pick.address
                    log.info(
                        "connecting to {address} ({target}) of {upstream} failed: {reason};"
                        " retry {attempt}",
                        address=pick.address,
                        target=pick.target,
                        upstream=balancer.name,
                        reason=e.reason,
                        attempt=attempt,
                    )
                    continue
                raise
            except BaseException:
                balancer.release(pick)
                raise
            balancers.report(upstream, pick, "http", response.status)
            return pick, response

    def _send_no_peer(self, ctx: ProxyContext, down: Downstream) -> None:
        """503: no healthy address in the upstream (Kong 1.x's JSON message)."""
        body = json_body({"message": NO_PEER_MESSAGE})
        ctx.status = 503
        ctx.response_size = len(body)
        self._send_whole(down, 503, [("Content-Type", JSON_TYPE), ("Server", SERVER_NAME)], body)

    async def _relay(
        self,
        ctx: ProxyContext,
        chain: PluginChain | None,
        down: Downstream,
        response: UpstreamResponse,
    ) -> None:
        ctx.status = response.status
        headers = response.headers
        # One pass drops what we replace, then appends (not one scan per ``set``).
        headers.remove_all(_OURS_ON_RESPONSES)
        if response.length is not None:
            # for HEAD too: the length the GET would have had (the body is never sent)
            headers.add("Content-Length", str(response.length))
        if headers.get("date") is None:
            headers.add("Date", self._http_date())
        headers.add("Via", SERVER_NAME)
        headers.add("X-Kong-Upstream-Latency", str(ctx.upstream_latency or 0))
        headers.add("X-Kong-Proxy-Latency", str(ctx.proxy_latency or 0))
        ctx.response_headers = headers
        try:
            if chain is not None:
                pending = chain.header_filter(ctx)
                if pending is not None:
                    await pending
        except BaseException:
            response.stopProducing()
            raise
        if down.gone:
            response.stopProducing()
            return
        down.send_head(ctx.status, ctx.response_headers.items())
        relay = _BodyRelay(ctx, chain, down)
        down.register_producer(response)
        try:
            response.deliver(relay)
            complete = await relay.done
        except CancelledError:
            response.stopProducing()
            raise
        finally:
            down.unregister_producer()
        if complete:
            if not down.gone:
                down.finish()
        else:
            log.info(
                "upstream body failed for {url}: {reason}",
                url=ctx.upstream_url,
                reason=relay.failure.getErrorMessage() if relay.failure else "?",
            )
            down.abort()

    async def _tunnel(
        self,
        ctx: ProxyContext,
        url: str,
        method: str,
        headers: HeaderList,
        down: Downstream,
        accept: str | None,
        balancer: Balancer | None = None,
    ) -> None:
        """WebSocket (any Upgrade): send the handshake, then splice raw bytes.

        A balanced upgrade goes to one pick (no retry: the handshake is the request).
        """
        pick: Pick | None = None
        try:
            scheme, host, port, target = split_url(url)
            head = build_head(method, target, headers, None)
            if balancer is not None:
                pick = balancer.pick(ctx)
                if pick is None:
                    self._send_no_peer(ctx, down)
                    return
            address = (pick.host, pick.port) if pick is not None else None
            tunnel = await open_tunnel(self.client, scheme, host, port, address)
        except ValueError:
            self._release(balancer, pick)
            self._send_error(ctx, down, 502, accept)
            return
        except UpstreamError as e:
            if pick is not None and balancer is not None and self.balancers is not None:
                kind = "timeout" if e.status == 504 else "tcp_failure"
                self.balancers.report(balancer.upstream, pick, kind)
            self._release(balancer, pick)
            self._send_error(ctx, down, e.status, accept)
            return
        except BaseException:
            self._release(balancer, pick)
            raise
        ctx.status = 101
        tunnel.write(head)
        down.splice(tunnel)
        try:
            await tunnel.closed
        finally:
            self._release(balancer, pick)

    @staticmethod
    def _release(balancer: Balancer | None, pick: Pick | None) -> None:
        if balancer is not None and pick is not None:
            balancer.release(pick)


def split_absolute_form(target: str) -> tuple[str, str]:
    """``(host[:port], origin-form)`` of an absolute-form request target."""
    scheme_end = target.find("://")
    if scheme_end < 0:
        return "", target if target.startswith("/") else "/" + target
    rest = target[scheme_end + 3 :]
    cut = len(rest)
    for sep in ("/", "?"):
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority, origin = rest[:cut], rest[cut:]
    authority = authority.rsplit("@", 1)[-1]
    if not origin.startswith("/"):
        origin = "/" + origin
    return authority, origin


def _is_upgrade(headers: HeaderList) -> bool:
    if headers.get("upgrade") is None:
        return False
    return any("upgrade" in v.lower() for v in headers.get_all("connection"))
