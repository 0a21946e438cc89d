"""A proxied request leaves nothing for the cycle collector; the GC tuning after start-up.

Objects in reference cycles are freed only by the cycle collector, whose young
collections the proxy's allocations then trigger every few dozen requests and whose
full collections walk every object the process holds (tens of milliseconds).  A
request that leaves no cycle is freed by reference counting as it ends.
"""

from __future__ import annotations

import gc
import importlib.machinery
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from kongtx import gc_tuning
from kongtx.clock import Clock
from kongtx.plugins.log_transports.udp import MAX_LITERALS, _Resolver
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream import UpstreamClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def saved_garbage() -> Iterator[Callable[[], list[Any]]]:
    """Collect first; then ``garbage()`` returns what only the collector would have freed."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def garbage() -> list[Any]:
        gc.collect()
        return list(gc.garbage)

    try:
        yield garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _kinds(objects: list[Any]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for obj in objects:
        name = type(obj).__qualname__
        kinds[name] = kinds.get(name, 0) + 1
    return kinds


def test_a_timer_that_ran_leaves_no_cycle(saved_garbage: Callable[[], list[Any]]) -> None:
    reactor = MemoryReactorClock()
    clock = Clock(reactor)
    ran: list[int] = []
    for i in range(10):
        clock.call_later(1.0, ran.append, i)
    reactor.advance(1.0)
    assert ran == list(range(10))
    assert "DelayedCall" not in _kinds(saved_garbage())


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self) -> None:
        self.protocols: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.protocols.append(proto)
        return succeed(proto)


class _Client(UpstreamClient):
    def __init__(self, reactor: MemoryReactorClock, endpoint: _Endpoint) -> None:
        super().__init__(reactor, Clock(reactor))
        self.endpoint = endpoint

    def endpoint_for(self, scheme: bytes, host: bytes, port: int) -> Any:
        return self.endpoint


class _Sink:
    def __init__(self) -> None:
        self.data = b""
        self.finished = False

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self) -> None:
        self.finished = True

    def fail(self, reason: Any) -> None:
        raise AssertionError(reason)


def test_a_finished_upstream_exchange_leaves_no_cycle(
    saved_garbage: Callable[[], list[Any]],
) -> None:
    """Exchange <-> parser and exchange <-> response are broken once the body ended."""
    reactor = MemoryReactorClock()
    endpoint = _Endpoint()
    client = _Client(reactor, endpoint)
    for _ in range(3):  # a new connection, then the pooled one twice
        d = Deferred.fromCoroutine(
            client.request("GET", "http://10.0.0.2/p", HeaderList([("Host", "up")]), None, 0)
        )
        endpoint.protocols[-1].dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
        )
        response = d.result
        sink = _Sink()
        response.deliver(sink)
        assert sink.data == b"ok" and sink.finished
        response.pauseProducing()  # the body has ended: no-ops, as before
        response.resumeProducing()
        del d, response, sink
    assert len(endpoint.protocols) == 1  # the connection was reused
    kinds = _kinds(saved_garbage())
    assert "Exchange" not in kinds and "UpstreamResponse" not in kinds, kinds


def _bench_profile() -> Any:
    path = os.path.join(REPO, "bench", "profile")
    loader = importlib.machinery.SourceFileLoader("kongtx_bench_profile", path)
    spec = importlib.util.spec_from_loader("kongtx_bench_profile", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["no-plugins", "key-auth", "key-auth+rate-limiting+udp-log"])
def test_a_proxied_request_leaves_no_cycle(target: str) -> None:
    """The whole path (bench/profile's harness: fast front-end, pipeline, plugins, pool)."""
    profile = _bench_profile()
    harness = profile.Harness()
    try:
        harness.run(harness.setup())
        data = profile.request_bytes(profile.TARGETS[target])
        out = harness.warm(data)
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(profile.BODY)
        gc.collect()  # what the imports and the set-up left
        gc.set_debug(gc.DEBUG_SAVEALL)
        for _ in range(20):
            harness.one(data)
        assert b"".join(harness.client.written).count(b"HTTP/1.1 200 ") == 20
        harness.drain()
        gc.collect()
        assert gc.garbage == [], _kinds(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        harness.log_sink.close()
        shutil.rmtree(harness.tmp, ignore_errors=True)


def test_tune_after_startup_freezes_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc_tuning.tune_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
        assert gc.get_threshold()[0] > 700
        # the collector still finds cycles made afterwards
        cycle: list[Any] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_udp_resolver_parses_a_literal_once() -> None:
    reactor = MemoryReactorClock()
    resolver = _Resolver(reactor, Clock(reactor))
    assert resolver.cached("127.0.0.1") == "127.0.0.1"
    assert resolver.cached("::1") == "::1"
    assert "127.0.0.1" in resolver._literals
    assert resolver.cached("127.0.0.1") == "127.0.0.1"
    assert resolver.cached("logs.example") is None  # a name: resolved through the reactor
    assert "logs.example" not in resolver._literals
    for i in range(MAX_LITERALS + 5):
        resolver.cached(f"10.0.{i // 256}.{i % 256}")
    assert len(resolver._literals) <= MAX_LITERALS


def test_udp_resolver_names_expire() -> None:
    reactor = MemoryReactorClock()
    resolver = _Resolver(reactor, Clock(reactor))
    resolver._cache["logs.example"] = ("10.1.1.1", reactor.seconds() + 1)
    assert resolver.cached("logs.example") == "10.1.1.1"
    reactor.advance(2)
    assert resolver.cached("logs.example") is None
