"""Balanced APIs on pooled upstream connections (the pipeline's express path, issue 8).

One real node on sqlite; the targets are real keep-alive HTTP/1.1 servers on free
127.0.0.1 ports (``health_backend.Backend(keepalive=True)``, threads of this test
process) that answer their own name, or 500 to a request with ``X-Fail: <its name>``,
and remember which client ports (node-side connections) they served.  Once the node holds a pooled connection to each target a
balanced request takes the express path: these tests check that what the general
path does still happens there (round-robin, passive health verdicts, latency headers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from health_backend import Backend, balanced_api, health
from proxy_support import Node, http, running_node


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with running_node({}) as started:
        yield started


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    one, two = Backend("one", keepalive=True), Backend("two", keepalive=True)
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()


def ask(node: Node, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    r = http("GET", node.proxy + path + "/x", None, headers or {}, timeout=10)
    return r.status, r.body.decode(), r


def test_round_robin_on_pooled_connections_with_latency_headers(
    node: Node, backends: tuple[Backend, Backend]
) -> None:
    """Sequential requests alternate between the two targets and reuse the node's
    connections to them (the express path), with the latency headers as before."""
    one, two = backends
    _, path = balanced_api(node, backends)  # type: ignore[arg-type]
    answers = [ask(node, path) for _ in range(20)]
    assert {status for status, _, _ in answers} == {200}
    names = [name for _, name, _ in answers]
    assert {names[0], names[1]} == {"one", "two"} and names == names[:2] * 10
    for _, _, r in answers:
        assert r.header("X-Kong-Upstream-Latency") is not None
        assert r.header("X-Kong-Proxy-Latency") is not None
    assert one.requests == two.requests == 10
    assert len(one.ports) < 10 and len(two.ports) < 10  # pooled connections reused


def test_passive_verdict_on_pooled_connections(
    node: Node, backends: tuple[Backend, Backend]
) -> None:
    """Passive checks count the 500s a target answers on pooled connections: after the
    threshold it is UNHEALTHY and gets no more traffic."""
    one, two = backends
    upstream, path = balanced_api(
        node,
        backends,  # type: ignore[arg-type]
        {"passive": {"unhealthy": {"http_failures": 2}}},
    )
    for _ in range(4):  # connections to both pooled
        assert ask(node, path)[0] == 200
    failures = 0
    deadline = time.monotonic() + 10
    while health(node, upstream)[two.target] != "UNHEALTHY":
        assert time.monotonic() < deadline, "no passive verdict"
        status, name, _ = ask(node, path, {"X-Fail": "two"})
        failures += status == 500
        assert failures <= 2 and (status, name) in {(200, "one"), (500, "two")}
    assert failures == 2
    asked = two.requests
    assert {ask(node, path)[1] for _ in range(6)} == {"one"}
    assert two.requests == asked
    assert len(two.ports) < two.requests  # the failures went on a reused connection
