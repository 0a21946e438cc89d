"""The pipeline's balanced path: picks, retries on connect failures, 503 with no peer."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from kongtx.balancer.dns import TargetResolver
from kongtx.balancer.health_state import HealthState
from kongtx.balancer.registry import Balancers
from kongtx.proxy.balanced import BALANCER_RETRIES
from kongtx.proxy.errors import ConnectError, UpstreamError
from kongtx.proxy.express import ExpressRequest
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.pipeline import (
    IncomingRequest,
    ProxyPipeline,
    RouterSource,
)
from kongtx.proxy.request import TrustedIps
from kongtx.proxy.upstream_response import StaleConnection
from tests.unit.test_balancer_dns import FakeNames
from tests.unit.test_balancer_registry import target_row, upstream_row
from tests.unit.test_pipeline import (
    ExpressPipelineTests,
    FakeDown,
    FakeResponse,
    PipelineBase,
    api_row,
)


class RowsDAO:
    """apis, upstreams and targets by equality filters."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        self.rows = rows

    async def find_all(self, collection: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in self.rows.get(collection, [])
            if all(r.get(k) == v for k, v in filters.items())
        ]


class ScriptedClient:
    """Answers each request from a script: an exception to raise or a response.

    With ``pooled``, a pooled connection is at hand for every address (the express
    path's ``pooled_exchange``) unless the next step is a connect failure (a new
    connection was needed); each call records whether it was on a pooled one.
    """

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls: list[tuple[str, tuple[str, int] | None, bytes | None]] = []
        #: per call: on a pooled connection (the express path), or a new one (False)
        self.on_pooled: list[bool] = []
        self.pooled = False

    def _step(self, url: str, address: tuple[str, int] | None, body: Any, length: int) -> Any:
        if body is not None:
            body.seek(0)
        self.calls.append((url, address, body.read(length) if body is not None else None))
        return self.script.pop(0) if self.script else FakeResponse()

    def request(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: Any = None,
        length: int = 0,
        stream: Any = None,
        address: tuple[str, int] | None = None,
        pool: bool = True,
        origin: Any = None,
    ) -> Deferred[Any]:
        self.on_pooled.append(False)
        step = self._step(url, address, body, length)
        if isinstance(step, Exception):
            return fail(step)
        return succeed(step)

    def start_pooled(self, *args: Any) -> None:
        # UpstreamClient.start_pooled's "no pooled connection at hand": the pipeline's
        # general path then calls request().  Only an API without a balancer gets here
        # (the plain-API tests below); a balanced one goes through the balancer's
        # request() or, on the express path, pooled_exchange.
        return None

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
    ) -> ScriptedExchange | None:
        if not self.pooled or (self.script and isinstance(self.script[0], ConnectError)):
            return None
        self.on_pooled.append(True)
        return ScriptedExchange(self._step(url, address, body, length), listener)

    def retry_on_new_connection(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        body: Any,
        length: int,
        origin: Any = None,
    ) -> Deferred[Any]:
        return self.request(method, url, headers, body, length)


class ScriptedExchange:
    """A pooled exchange whose outcome (a step of the script) its listener is told at begin."""

    def __init__(self, step: Any, listener: Any) -> None:
        self.step = step
        self.listener = listener
        self.cancelled = False

    def begin(self) -> None:
        if isinstance(self.step, Exception):
            self.listener.failed(Failure(self.step))
        elif isinstance(self.step, Deferred):
            self.step.addCallbacks(self.listener.response, self.listener.failed)
        else:
            self.listener.response(self.step)

    def cancel(self) -> None:
        self.cancelled = True
        if isinstance(self.step, Deferred):
            self.step.cancel()


class BalancedPipelineTests(PipelineBase):
    def setUp(self) -> None:
        super().setUp()
        self.dao = RowsDAO(  # type: ignore[assignment]
            {
                "apis": [api_row(upstream_url="http://service.v1/base")],
                "upstreams": [upstream_row()],
                "targets": [
                    target_row("10.0.0.1:80", created_at=1),
                    target_row("10.0.0.2:80", created_at=2),
                ],
            }
        )
        self.health = HealthState()
        resolver = TargetResolver(
            self.reactor, self.clock, [("127.0.0.1", 53)], resolver=FakeNames()
        )
        self.balancers = Balancers(self.cache, self.dao, self.health, resolver, self.clock)
        self.outcomes: list[tuple[str, str, int]] = []
        self.balancers.outcome_listeners.append(
            lambda row, pick, kind, status: self.outcomes.append((pick.address, kind, status))
        )
        self.scripted = ScriptedClient()

    def balanced(self) -> ProxyPipeline:
        return ProxyPipeline(
            RouterSource(self.cache, self.dao),
            self.scripted,  # type: ignore[arg-type]
            self.clock,
            trusted_ips=TrustedIps([]),
            balancers=self.balancers,
        )

    def finish(
        self, pipeline: ProxyPipeline, body: bytes | None = None
    ) -> tuple[FakeDown, Deferred[None]]:
        incoming = IncomingRequest(
            "POST" if body else "GET",
            "/p/x",
            HeaderList([("Host", "other"), ("Accept", "application/json")]),
            "10.9.9.9",
            "http",
            io.BytesIO(body) if body else None,
            len(body or b""),
        )
        down = FakeDown()
        return down, self.serve(pipeline, incoming, down)

    def test_balanced_request_goes_to_the_pick_with_the_upstream_url(self) -> None:
        """The URL (and so Host) keeps the upstream name; the connection goes to the pick."""
        response = FakeResponse()
        self.scripted.script = [response]
        down, d = self.finish(self.balanced())
        response.sink.finish()
        self.successResultOf(d)
        url, address, _ = self.scripted.calls[0]
        assert url == "http://service.v1/base/x"
        assert address == ("10.0.0.1", 80)
        assert down.status == 200
        assert self.outcomes == [("10.0.0.1:80", "http", 200)]

    def test_connect_failure_retried_on_another_address(self) -> None:
        """A refused connect is retried on the other target with the same body; outcomes reported."""
        response = FakeResponse()
        self.scripted.script = [ConnectError(502, "refused"), response]
        down, d = self.finish(self.balanced(), body=b"payload")
        response.sink.finish()
        self.successResultOf(d)
        assert [c[1] for c in self.scripted.calls] == [("10.0.0.1", 80), ("10.0.0.2", 80)]
        assert [c[2] for c in self.scripted.calls] == [b"payload", b"payload"]
        assert down.status == 200
        assert self.outcomes == [("10.0.0.1:80", "tcp_failure", 0), ("10.0.0.2:80", "http", 200)]

    def test_retries_are_bounded(self) -> None:
        """Every connect failing: 1 + BALANCER_RETRIES attempts, alternating, then the error page."""
        self.scripted.script = [ConnectError(504, "connect timed out")] * (BALANCER_RETRIES + 3)
        down, d = self.finish(self.balanced())
        self.successResultOf(d)
        addresses = [c[1] for c in self.scripted.calls]
        assert len(addresses) == BALANCER_RETRIES + 1
        assert all(a != b for a, b in zip(addresses, addresses[1:], strict=False))
        assert down.status == 504
        assert {kind for _, kind, _ in self.outcomes} == {"timeout"}

    def test_failure_after_connect_is_not_retried(self) -> None:
        """A read timeout (the request was sent) is not retried: 504 at once."""
        self.scripted.script = [UpstreamError(504, "read timed out")]
        down, d = self.finish(self.balanced())
        self.successResultOf(d)
        assert len(self.scripted.calls) == 1 and down.status == 504

    def test_no_healthy_peer_is_503_json(self) -> None:
        """Every address unhealthy: Kong 1.x's 503 JSON, nothing sent upstream."""
        self.health.set("u-1", "10.0.0.1:80", False, "manual")
        self.health.set("u-1", "10.0.0.2:80", False, "manual")
        down, d = self.finish(self.balanced())
        self.successResultOf(d)
        assert down.status == 503
        assert json.loads(down.body) == {"message": "failure to get a peer from the ring-balancer"}
        assert down.header("content-type") == "application/json; charset=utf-8"
        assert self.scripted.calls == []

    def test_api_without_upstream_is_proxied_as_before(self) -> None:
        """A host that names no upstream: no address, the plain path (negative entry cached)."""
        self.dao.rows["apis"] = [api_row(upstream_url="http://plain.example:8080/base")]  # type: ignore[attr-defined]
        response = FakeResponse()
        self.scripted.script = [response]
        down, d = self.finish(self.balanced())
        response.sink.finish()
        self.successResultOf(d)
        assert self.scripted.calls[0][:2] == ("http://plain.example:8080/base/x", None)
        assert self.cache.peek("upstreams:plain.example") == (True, None)

    def test_upstream_lookup_failure_proxies_without_balancing(self) -> None:
        """A datastore error while loading a cold upstream entry: the plain path, not a 500."""

        class BrokenUpstreams(RowsDAO):
            async def find_all(
                self, collection: str, filters: dict[str, Any]
            ) -> list[dict[str, Any]]:
                if collection == "upstreams":
                    raise ConnectionError("datastore down")
                return await super().find_all(collection, filters)

        self.dao = BrokenUpstreams(self.dao.rows)  # type: ignore[attr-defined]
        self.balancers.dao = self.dao
        response = FakeResponse()
        self.scripted.script = [response]
        down, d = self.finish(self.balanced())
        response.sink.finish()
        self.successResultOf(d)
        assert self.scripted.calls[0][:2] == ("http://service.v1/base/x", None)
        assert down.status == 200
        assert not self.cache.peek("upstreams:service.v1")[0]  # nothing cached: retried later


class ExpressBalancedPipelineTests(BalancedPipelineTests):
    """The same tests through ``ProxyPipeline.start`` with a pooled connection at hand
    for every peer (the express path), unless the script fails a connect."""

    serve = ExpressPipelineTests.serve

    def setUp(self) -> None:
        super().setUp()
        self.scripted.pooled = True

    def warm(self, pipeline: ProxyPipeline) -> None:
        """A first request, so the router and the upstream's rows are cached."""
        response = FakeResponse()
        self.scripted.script = [response]
        _, d = self.finish(pipeline)
        response.sink.finish()
        self.successResultOf(d)
        self.scripted.calls.clear()
        self.scripted.on_pooled.clear()
        self.outcomes.clear()

    def start_express(self, pipeline: ProxyPipeline) -> tuple[Any, FakeDown]:
        incoming = IncomingRequest("GET", "/p/x", HeaderList([("Host", "other")]), "10.9.9.9")
        down = FakeDown()
        return pipeline.start(incoming, down), down

    def test_express_path_taken_with_the_pick(self) -> None:
        """Cached rows and a pooled connection to the pick: no coroutine, the outcome told."""
        pipeline = self.balanced()
        self.warm(pipeline)
        pending: Deferred[Any] = Deferred()
        self.scripted.script = [pending]
        started, down = self.start_express(pipeline)
        assert isinstance(started, ExpressRequest)
        assert started.pick is not None and started.pick.address == "10.0.0.2:80"
        response = FakeResponse()
        pending.callback(response)
        response.sink.write(b"hello")
        response.sink.finish()
        assert started.done and started.error is None and started.pick is None
        assert down.status == 200 and down.body == b"hello"
        assert self.scripted.on_pooled == [True]
        assert self.scripted.calls[0][:2] == ("http://service.v1/base/x", ("10.0.0.2", 80))
        assert self.outcomes == [("10.0.0.2:80", "http", 200)]

    def test_round_robin_kept_across_both_paths(self) -> None:
        """No pooled connection: the general path goes to the peer the express one picked."""
        pipeline = self.balanced()
        self.warm(pipeline)  # went to 10.0.0.1
        self.scripted.pooled = False
        started, _ = self.start_express(pipeline)
        assert started is not None and not isinstance(started, ExpressRequest)
        Deferred.fromCoroutine(started)
        self.scripted.pooled = True
        self.finish(pipeline)
        assert [c[1] for c in self.scripted.calls] == [("10.0.0.2", 80), ("10.0.0.1", 80)]
        assert self.scripted.on_pooled == [False, True]
        assert [kind for _, kind, _ in self.outcomes] == ["http", "http"]

    def test_stale_connection_then_the_balancers_retries(self) -> None:
        """A stale pooled connection: a new one to the same peer; its connect failing is
        reported and retried on the other peer, as on the general path."""
        pipeline = self.balanced()
        self.warm(pipeline)
        response = FakeResponse()
        self.scripted.script = [StaleConnection(), ConnectError(502, "refused"), response]
        down, d = self.finish(pipeline)
        response.sink.finish()
        self.successResultOf(d)
        assert [c[1] for c in self.scripted.calls] == [
            ("10.0.0.2", 80),
            ("10.0.0.2", 80),
            ("10.0.0.1", 80),
        ]
        assert self.scripted.on_pooled == [True, False, False]
        assert self.outcomes == [("10.0.0.2:80", "tcp_failure", 0), ("10.0.0.1:80", "http", 200)]
        assert down.status == 200

    def test_failure_on_the_pooled_connection_is_reported(self) -> None:
        """A 502 after sending on the pooled connection: the error page, a tcp_failure."""
        pipeline = self.balanced()
        self.warm(pipeline)
        self.scripted.script = [UpstreamError(502, "invalid response")]
        down, d = self.finish(pipeline)
        self.successResultOf(d)
        assert down.status == 502 and self.scripted.on_pooled == [True]
        assert self.outcomes == [("10.0.0.2:80", "tcp_failure", 0)]

    def test_client_gone_gives_the_pick_back(self) -> None:
        """Least-connections: a request holds its peer until it ends, however it ends
        (the response relayed, or the client gone before it came)."""
        self.dao.rows["upstreams"] = [upstream_row(algorithm="least-connections")]  # type: ignore[attr-defined]
        pipeline = self.balanced()
        self.warm(pipeline)
        counts = self.balancers._by_id["u-1"]._lc
        assert counts is not None and counts.active == [0, 0]
        pending: Deferred[Any] = Deferred()
        self.scripted.script = [pending]
        down, d = self.finish(pipeline)
        assert self.scripted.on_pooled == [True] and sum(counts.active) == 1
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert down.status is None and self.outcomes == [] and counts.active == [0, 0]
        response = FakeResponse()
        self.scripted.script = [response]
        down, d = self.finish(pipeline)
        assert sum(counts.active) == 1  # the body still coming
        response.sink.finish()
        self.successResultOf(d)
        assert counts.active == [0, 0] and self.scripted.on_pooled == [True, True]
