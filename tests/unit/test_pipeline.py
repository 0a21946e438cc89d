"""The proxy pipeline with an in-memory client side and upstream (kongtx.proxy.pipeline)."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock as TaskClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.express import ExpressRequest
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.pipeline import IncomingRequest, ProxyContext, ProxyPipeline, RouterSource
from kongtx.proxy.request import TrustedIps
from kongtx.proxy.upstream_response import StaleConnection
from kongtx.router import CACHE_KEY


def api_row(**kw: Any) -> dict[str, Any]:
    row = {
        "id": "api-1",
        "name": "a",
        "request_host": "a.com",
        "request_path": "/p",
        "upstream_url": "http://up.com/base",
        "strip_request_path": True,
        "preserve_host": False,
    }
    row.update(kw)
    return row


class FakeDAO:
    def __init__(self, apis: list[dict[str, Any]]) -> None:
        self.apis = apis
        self.calls = 0

    async def find_all(self, collection: str, filters: Any) -> list[dict[str, Any]]:
        assert collection == "apis"
        self.calls += 1
        return list(self.apis)


class FakeResponse:
    def __init__(
        self,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        length: int | None = 5,
        reason: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = HeaderList(headers or [("Content-Type", "text/plain")])
        self.length = length
        self.sink: Any = None
        self.events: list[str] = []

    def deliver(self, sink: Any) -> None:
        self.sink = sink

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


class FakeClient:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, HeaderList, bytes | None]] = []
        self.streams: list[Any] = []
        self.pending: Deferred[Any] | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: Any = None,
        length: int = 0,
        stream: Any = None,
        origin: Any = None,
    ) -> Any:
        data = body.read(length) if body is not None else None
        self.streams.append(stream)
        self.requests.append((method, url, headers, data))
        self.pending = Deferred()
        return await self.pending

    def start_pooled(self, *args: Any) -> None:
        return None  # no pooled connection: the pipeline calls request()

    #: whether a pooled connection is at hand (the pipeline's express path then)
    pooled = False

    def pooled_exchange(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: Any,
        length: int,
        listener: Any,
        address: tuple[str, int] | None = None,
        origin: Any = None,
    ) -> FakeExchange | None:
        if not self.pooled:
            return None
        self.streams.append(None)
        self.requests.append((method, url, headers, body.read(length) if body else None))
        pending = self.pending = Deferred()
        pending.addCallbacks(listener.response, listener.failed)
        return FakeExchange(pending)

    def retry_on_new_connection(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: Any,
        length: int,
        origin: Any = None,
    ) -> Deferred[Any]:
        self.requests.append((method, url, headers, body.read(length) if body else None))
        self.pending = Deferred()
        return self.pending


class FakeExchange:
    """The pooled exchange: the test fires ``FakeClient.pending`` for its outcome."""

    def __init__(self, pending: Deferred[Any]) -> None:
        self.pending = pending
        self.begun = False

    def begin(self) -> None:
        self.begun = True

    def cancel(self) -> None:
        self.pending.cancel()


class FakeDown:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.finished = False
        self.aborted = False
        self.producer: Any = None
        self.gone = False
        self.reason = ""

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = headers

    def send_head_lowered(
        self, status: int, items: list[tuple[str, str, str]], reason: str
    ) -> None:
        self.reason = reason
        self.send_head(status, [(entry[1], entry[2]) for entry in items])

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def write(self, data: bytes) -> None:
        self.body += data

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True

    def register_producer(self, producer: Any) -> None:
        self.producer = producer

    def unregister_producer(self) -> None:
        self.producer = None

    def splice(self, tunnel: Any) -> None:
        raise AssertionError("no tunnel expected")


class FakeChain:
    """A plugin chain recording the phases it ran."""

    idle = False

    def __init__(self, reject: int | None = None) -> None:
        self.reject = reject
        self.calls: list[str] = []

    def access(self, ctx: Any) -> None:
        self.calls.append("access")
        ctx.headers.set("X-Plugin", "yes")
        ctx.query.append(("added", "1"))
        if self.reject:
            ctx.respond(self.reject, {"message": "Unauthorized"}, {"WWW-Authenticate": "Key"})

    def header_filter(self, ctx: Any) -> None:
        self.calls.append("header_filter")
        ctx.response_headers.set("X-Filtered", str(ctx.status))

    def body_filter(self, ctx: Any, chunk: bytes, last: bool) -> bytes:
        self.calls.append(f"body_filter:{last}")
        return chunk.upper()

    def log(self, ctx: Any) -> None:
        self.calls.append(f"log:{ctx.status}")


class FakeRuntime:
    def __init__(self, chain: FakeChain, cached: bool = False) -> None:
        self.chain = chain
        self.cached = cached

    def cached_chain(self, api: Any) -> Any:
        return self.chain if self.cached else None

    def chain_at(self, key: str) -> Any:
        assert key.startswith("plugins_chain:")
        return self.cached_chain(None)

    async def chain_for(self, api: Any) -> Any:
        return self.chain


class PipelineBase(SynchronousTestCase):
    """Fakes around a pipeline (no tests of its own)."""

    def setUp(self) -> None:
        self.reactor = TaskClock()
        self.clock = Clock(self.reactor)
        self.cache = Cache(self.clock)
        self.dao = FakeDAO([api_row()])
        self.client = FakeClient()
        self.chain: FakeChain | None = None

    def pipeline(
        self, chain: FakeChain | None = None, trusted: list[str] | None = None
    ) -> ProxyPipeline:
        self.chain = chain
        return ProxyPipeline(
            RouterSource(self.cache, self.dao),
            self.client,  # type: ignore[arg-type]
            self.clock,
            trusted_ips=TrustedIps(trusted or []),
            plugins=FakeRuntime(chain, self.cached_chains) if chain else None,
        )

    #: the plugin runtime has the chain cached (the express path runs the access phase)
    cached_chains = False

    def start(
        self,
        pipeline: ProxyPipeline,
        uri: str = "/p/x?b=1",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        method: str = "GET",
    ) -> tuple[Deferred[None], FakeDown]:
        incoming = IncomingRequest(
            method,
            uri,
            HeaderList(headers if headers is not None else [("Host", "other")]),
            "10.0.0.1",
            "http",
            io.BytesIO(body) if body else None,
            len(body or b""),
        )
        down = FakeDown()
        d = self.serve(pipeline, incoming, down)
        return d, down

    def serve(self, pipeline: ProxyPipeline, incoming: IncomingRequest, down: Any) -> Any:
        """Run the request on the general path (``handle``)."""
        return Deferred.fromCoroutine(pipeline.handle(incoming, down))


class PipelineTests(PipelineBase):
    # ---------------------------------------------------------------- routing

    def test_no_api_is_404_without_plugins(self) -> None:
        """No match: SPEC §3.1 404 JSON with Server, no Via, no plugin phase."""
        chain = FakeChain()
        d, down = self.start(self.pipeline(chain), "/nope?x=1", [("Host", "b.com:80")])
        self.successResultOf(d)
        assert down.status == 404 and down.finished
        assert json.loads(down.body) == {
            "message": "API not found with these values",
            "request_host": ["b.com"],
            "request_path": "/nope",
        }
        assert down.header("server") == "kong/0.9.9"
        assert down.header("via") is None
        assert chain.calls == []

    def test_router_cached_under_all_apis_by_dic(self) -> None:
        """The router is loaded once, kept under ALL_APIS_BY_DIC, rebuilt after invalidation."""
        p = self.pipeline()
        self.start(p, "/nope")
        self.start(p, "/nope")
        assert self.dao.calls == 1
        assert self.cache.peek(CACHE_KEY)[0]
        self.cache.invalidate(CACHE_KEY)
        self.dao.apis = []
        self.start(p, "/nope")
        assert self.dao.calls == 2

    # ---------------------------------------------------------------- proxying

    def test_proxied_request_and_response(self) -> None:
        """The upstream request follows SPEC §3.2; the response gets Via and latency headers."""
        d, down = self.start(
            self.pipeline(), "/p/x?b=1&a=2", [("Host", "other"), ("Connection", "close")]
        )
        method, url, headers, body = self.client.requests[0]
        assert (method, url) == ("GET", "http://up.com/base/x?a=2&b=1")
        assert headers.get("host") == "up.com"
        assert headers.get("connection") is None
        assert headers.get("x-forwarded-prefix") == "/p"
        self.reactor.advance(0.25)
        response = FakeResponse()
        assert self.client.pending is not None
        self.client.pending.callback(response)
        assert down.status == 200
        assert down.header("via") == "kong/0.9.9"
        assert down.header("x-kong-upstream-latency") == "250"
        assert down.header("x-kong-proxy-latency") == "0"
        assert down.header("content-length") == "5"
        assert down.producer is response
        response.sink.write(b"hel")
        response.sink.write(b"lo")
        response.sink.finish()
        self.successResultOf(d)
        assert down.body == b"hello" and down.finished and not down.aborted
        assert down.producer is None

    def test_request_body_forwarded(self) -> None:
        """The request body goes upstream as read from the client's spool."""
        self.start(self.pipeline(), "/p", body=b"payload", method="POST")
        assert self.client.requests[0][3] == b"payload"

    def test_upstream_error_page(self) -> None:
        """An UpstreamError becomes SPEC §3.5's page chosen by Accept, with Server."""
        d, down = self.start(self.pipeline(), "/p", [("Accept", "application/json")])
        assert self.client.pending is not None
        self.client.pending.errback(UpstreamError(504, "timeout"))
        self.successResultOf(d)
        assert down.status == 504
        assert json.loads(down.body) == {"message": "The upstream server is timing out"}
        assert down.header("server") == "kong/0.9.9"
        assert down.header("via") is None

    def test_upstream_failure_mid_body_aborts_client(self) -> None:
        """When the upstream breaks mid-body, the client connection is aborted, not finished."""
        d, down = self.start(self.pipeline(), "/p")
        response = FakeResponse()
        assert self.client.pending is not None
        self.client.pending.callback(response)
        response.sink.write(b"he")
        response.sink.fail(Failure(ConnectionError("reset")))
        self.successResultOf(d)
        assert down.aborted and not down.finished

    def test_client_gone_cancels_upstream_body(self) -> None:
        """Cancelling the request (client gone) mid-body stops the upstream producer."""
        d, down = self.start(self.pipeline(), "/p")
        response = FakeResponse()
        assert self.client.pending is not None
        self.client.pending.callback(response)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert "stop" in response.events

    def test_client_gone_before_response_cancels_upstream_request(self) -> None:
        """Cancelling while waiting for upstream headers cancels the upstream request."""
        d, down = self.start(self.pipeline(), "/p")
        pending = self.client.pending
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert pending is not None and pending.called

    def test_head_response_keeps_upstream_length(self) -> None:
        """For HEAD, the upstream's Content-Length (of the GET) is passed on, no body."""
        d, down = self.start(self.pipeline(), "/p", method="HEAD")
        response = FakeResponse(length=1234)
        assert self.client.pending is not None
        self.client.pending.callback(response)
        assert down.header("content-length") == "1234"
        response.sink.finish()
        self.successResultOf(d)
        assert down.body == b"" and down.finished

    # ---------------------------------------------------------------- plugins

    def test_plugin_phases_in_order_and_log_after_finish(self) -> None:
        """access edits go upstream; header/body filters apply; log runs on a later turn."""
        chain = FakeChain()
        d, down = self.start(self.pipeline(chain), "/p")
        _, url, headers, _ = self.client.requests[0]
        assert headers.get("x-plugin") == "yes" and url.endswith("?added=1")
        response = FakeResponse()
        assert self.client.pending is not None
        self.client.pending.callback(response)
        assert down.header("x-filtered") == "200"
        response.sink.write(b"abc")
        response.sink.finish()
        self.successResultOf(d)
        assert down.body == b"ABC"
        assert chain.calls == ["access", "header_filter", "body_filter:False", "body_filter:True"]
        self.reactor.advance(0)
        assert chain.calls[-1] == "log:200"

    def test_upstream_reason_phrase_relayed_unless_a_plugin_set_the_status(self) -> None:
        """nginx relays the upstream's status line; a status a plugin set has its standard one."""
        d, down = self.start(self.pipeline(), "/p")
        assert self.client.pending is not None
        self.client.pending.callback(FakeResponse(reason="Totally Fine"))
        assert (down.status, down.reason) == (200, "Totally Fine")

        class StatusChain(FakeChain):
            def header_filter(self, ctx: Any) -> None:
                ctx.status = 299

        d, down = self.start(self.pipeline(StatusChain()), "/p")
        assert self.client.pending is not None
        self.client.pending.callback(FakeResponse(reason="Totally Fine"))
        assert (down.status, down.reason) == (299, "")

    def test_plugin_rejection(self) -> None:
        """A plugin's respond() ends the request with a Kong response; no upstream call."""
        chain = FakeChain(reject=401)
        d, down = self.start(self.pipeline(chain), "/p")
        self.successResultOf(d)
        assert self.client.requests == []
        assert down.status == 401
        assert json.loads(down.body.lower()) == {"message": "unauthorized"}
        assert down.header("server") == "kong/0.9.9"
        assert down.header("www-authenticate") == "Key"
        assert down.header("x-filtered") == "401"
        assert down.header("via") is None
        self.reactor.advance(0)
        assert chain.calls[-1] == "log:401"

    # ---------------------------------------------------------------- context

    def test_context_client_ip_respects_trusted_ips(self) -> None:
        """ctx.client_ip is the peer unless the peer is trusted, then XFF decides."""
        seen: list[str] = []

        class Spy(FakeChain):
            def access(self, ctx: Any) -> None:
                seen.append(ctx.client_ip)

        self.start(self.pipeline(Spy()), "/p", [("X-Forwarded-For", "1.2.3.4")])
        self.start(
            self.pipeline(Spy(), trusted=["10.0.0.0/8"]), "/p", [("X-Forwarded-For", "1.2.3.4")]
        )
        assert seen == ["10.0.0.1", "1.2.3.4"]
        assert self.client.requests[1][2].get("x-real-ip") == "1.2.3.4"

    def test_context_body_read_and_replace(self) -> None:
        """read_body returns the body; set_body replaces what goes upstream."""
        got: list[bytes] = []

        class BodyChain(FakeChain):
            async def _access(self, ctx: Any) -> None:
                got.append(await ctx.read_body())
                ctx.set_body(b"new!")

            def access(self, ctx: Any) -> Any:
                return self._access(ctx)

        self.start(self.pipeline(BodyChain()), "/p", body=b"old", method="POST")
        assert got == [b"old"]
        assert self.client.requests[0][3] == b"new!"

    def test_context_fields(self) -> None:
        """The context carries the RequestContext fields plugins rely on."""
        incoming = IncomingRequest(
            "GET",
            "/p/x?a=1&b",
            HeaderList([("Host", "h")]),
            "1.1.1.1",
            "https",
            server_addr="127.0.0.1",
            server_port=8443,
            connection_id=7,
            connection_requests=2,
        )
        from kongtx.router import Match

        ctx = ProxyContext(
            api_row(), Match(api_row(), "path", None), incoming, "1.1.1.1", "/p/x", "a=1&b", 12.5
        )
        assert (ctx.method, ctx.scheme, ctx.path) == ("GET", "https", "/p/x")
        assert ctx.query == [("a", "1"), ("b", None)]
        assert (ctx.server_addr, ctx.server_port, ctx.connection_id, ctx.connection_requests) == (
            "127.0.0.1",
            8443,
            7,
            2,
        )
        assert ctx.started_at == 12.5 and not ctx.responded
        ctx.respond(403)
        assert ctx.responded and ctx.status == 403

    def test_context_copies_headers_when_asked(self) -> None:
        """What plugins change (headers, query args) goes upstream, never into the
        client's request; untouched, the client's headers are used without a copy."""
        from kongtx.proxy.context import upstream_request_of
        from kongtx.router import Match

        def context() -> ProxyContext:
            headers = HeaderList([("Host", "h"), ("X-A", "1")])
            incoming = IncomingRequest("GET", "/p/x?b=2&a=1", headers, "1.1.1.1")
            return ProxyContext(
                api_row(), Match(api_row(), "path", None), incoming, "1.1.1.1", "/p/x", "b=2&a=1", 0
            )

        ctx = context()
        req = upstream_request_of(ctx, False)
        assert req.url == "http://up.com/base/x?a=1&b=2" and req.headers.get("x-a") == "1"
        assert ctx.headers is ctx.headers and ctx.headers is not ctx._incoming.headers
        ctx = context()
        ctx.headers.set("X-A", "2")
        ctx.query = [(k, v) for k, v in ctx.query if k != "b"]
        req = upstream_request_of(ctx, False)
        assert req.url == "http://up.com/base/x?a=1" and req.headers.get("x-a") == "2"
        assert ctx._incoming.headers.get("x-a") == "1"
        assert ctx.shared == {} and ctx.shared is ctx.shared
        assert len(ctx.response_headers) == 0


class ExpressPipelineTests(PipelineTests):
    """The same tests through ``ProxyPipeline.start`` as the fast front-end calls it:
    the router and chains cached and a pooled connection at hand (the express path)."""

    cached_chains = True

    def setUp(self) -> None:
        super().setUp()
        self.client.pooled = True

    def serve(self, pipeline: ProxyPipeline, incoming: IncomingRequest, down: Any) -> Any:
        if pipeline.routers.peek() is None:
            self.successResultOf(Deferred.fromCoroutine(pipeline.routers.get()))
        started = pipeline.start(incoming, down)
        if started is None:
            return succeed(None)
        if not isinstance(started, ExpressRequest):
            return Deferred.fromCoroutine(started)
        express = started
        d: Deferred[None] = Deferred(lambda _: express.cancel())

        def ended(_: ExpressRequest, error: BaseException | None) -> None:
            if error is None:
                d.callback(None)
            else:
                d.errback(Failure(error))

        express.watch(ended, None)
        return d

    def test_express_path_taken(self) -> None:
        """No coroutine: ``start`` returns the request waiting for its exchange."""
        pipeline = self.pipeline(FakeChain())
        self.start(pipeline, "/p")
        incoming = IncomingRequest("GET", "/p", HeaderList([("Host", "a")]), "10.0.0.1")
        started = pipeline.start(incoming, FakeDown())
        assert isinstance(started, ExpressRequest)
        assert isinstance(started.exchange, FakeExchange) and started.exchange.begun

    def test_general_path_without_a_pooled_connection(self) -> None:
        """No pooled connection: the rest is a coroutine (connect on the general path)."""
        self.client.pooled = False
        pipeline = self.pipeline()
        self.start(pipeline, "/p")
        incoming = IncomingRequest("GET", "/p", HeaderList([("Host", "a")]), "10.0.0.1")
        started = pipeline.start(incoming, FakeDown())
        assert started is not None and not isinstance(started, ExpressRequest)
        Deferred.fromCoroutine(started)
        assert len(self.client.requests) == 2

    def test_stale_pooled_connection_retried_on_a_new_one(self) -> None:
        """A pooled connection found stale: the request again on a new one, once."""
        d, down = self.start(self.pipeline(), "/p")
        assert self.client.pending is not None
        self.client.pending.errback(StaleConnection())
        assert len(self.client.requests) == 2
        assert self.client.requests[0][:2] == self.client.requests[1][:2]
        response = FakeResponse()
        self.client.pending.callback(response)
        response.sink.write(b"hello")
        response.sink.finish()
        self.successResultOf(d)
        assert down.status == 200 and down.body == b"hello" and down.finished

    def test_client_gone_during_the_retry_cancels_it(self) -> None:
        """The client going away while the retry connects cancels the retry."""
        d, down = self.start(self.pipeline(), "/p")
        assert self.client.pending is not None
        self.client.pending.errback(StaleConnection())
        retry = self.client.pending
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert retry.called and down.status is None

    def test_observers_see_every_end(self) -> None:
        """Observers (metrics) run once per routed request on every way it ends."""
        pipeline = self.pipeline()
        seen: list[int] = []
        pipeline.observers.append(lambda ctx: seen.append(ctx.status))
        d, down = self.start(pipeline, "/p")
        assert self.client.pending is not None
        self.client.pending.errback(UpstreamError(502, "refused"))
        self.successResultOf(d)
        d, down = self.start(pipeline, "/p")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        d, down = self.start(pipeline, "/p")
        response = FakeResponse()
        assert self.client.pending is not None
        self.client.pending.callback(response)
        assert seen == [502, 0]  # the body is still coming
        response.sink.write(b"hello")
        response.sink.finish()
        self.successResultOf(d)
        assert seen == [502, 0, 200] and down.finished


class WebFrontEndTests(SynchronousTestCase):
    """ProxyResource + ProxySite: raw bytes in, raw bytes out, fake upstream."""

    def setUp(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from kongtx.proxy.http import ProxySite
        from kongtx.proxy.resource import ProxyResource

        self.reactor = TaskClock()
        clock = Clock(self.reactor)
        self.client = FakeClient()
        pipeline = ProxyPipeline(
            RouterSource(Cache(clock), FakeDAO([api_row()])),
            self.client,
            clock,  # type: ignore[arg-type]
        )
        site = ProxySite(ProxyResource(pipeline))
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.8.7", 5555))
        self.channel.makeConnection(self.transport)

    def test_response_bytes(self) -> None:
        """Upstream headers pass, twisted.web's own Server/Date/Content-Type defaults do not."""
        self.channel.dataReceived(b"GET /p/x HTTP/1.1\r\nHost: z\r\n\r\n")
        _, url, headers, _ = self.client.requests[0]
        assert url == "http://up.com/base/x"
        assert headers.get("x-real-ip") == "10.9.8.7"
        response = FakeResponse(headers=[("Server", "upstream/1"), ("X-Up", "1")], length=2)
        assert self.client.pending is not None
        self.client.pending.callback(response)
        response.sink.write(b"ok")
        response.sink.finish()
        out = self.transport.value()
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Server: upstream/1" in head and b"TwistedWeb" not in head
        assert head.count(b"Date:") == 1 and b"text/html" not in head
        assert b"Via: kong/0.9.9" in head and b"Content-Length: 2" in head
        assert body == b"ok"

    def test_404_bytes(self) -> None:
        """An unmatched request gets the Kong 404 with Server: kong/0.9.9."""
        self.channel.dataReceived(b"GET /nope HTTP/1.1\r\nHost: z\r\n\r\n")
        out = self.transport.value()
        assert out.startswith(b"HTTP/1.1 404")
        assert b"Server: kong/0.9.9" in out
        assert out.endswith(b'"request_path":"/nope"}')

    def test_client_disconnect_cancels_upstream(self) -> None:
        """A client that disconnects while the upstream works cancels the upstream request."""
        from twisted.internet.error import ConnectionLost

        self.channel.dataReceived(b"GET /p HTTP/1.1\r\nHost: z\r\n\r\n")
        pending = self.client.pending
        self.channel.connectionLost(Failure(ConnectionLost()))
        assert pending is not None and pending.called


def test_split_absolute_form() -> None:
    """An absolute-form target splits into its authority and origin-form."""
    from kongtx.proxy.context import split_absolute_form

    assert split_absolute_form("http://h.com:81/a/b?x=1") == ("h.com:81", "/a/b?x=1")
    assert split_absolute_form("https://u@h.com?x") == ("h.com", "/?x")
    assert split_absolute_form("http://h.com") == ("h.com", "/")
    assert split_absolute_form("*") == ("", "/*")


class DateTests(PipelineBase):
    """Every response carries a Date (nginx always sent one)."""

    def test_generated_and_proxied_have_date(self) -> None:
        """Kong-generated responses get a Date; a proxied one keeps the upstream's or gets one."""
        self.reactor.advance(784111777)  # Sun, 06 Nov 1994 08:49:37 GMT
        _, down = self.start(self.pipeline(), "/nope")
        assert down.header("date") == "Sun, 06 Nov 1994 08:49:37 GMT"
        _, down = self.start(self.pipeline(), "/p")
        assert self.client.pending is not None
        self.client.pending.callback(FakeResponse(headers=[("Date", "upstream-date")]))
        assert down.header("date") == "upstream-date"
        _, down = self.start(self.pipeline(), "/p")
        self.client.pending.callback(FakeResponse())
        assert down.header("date") == "Sun, 06 Nov 1994 08:49:37 GMT"
