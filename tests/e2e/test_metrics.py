"""A real node with ``status_listen``: /metrics parses with prometheus_client and counts traffic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FRONTENDS
from prometheus_client.parser import text_string_to_metric_families
from proxy_support import Node, Upstream, free_port, http, running_node


class StatusNode:
    """A node and its status listener's URL."""

    def __init__(self, node: Node, status: str) -> None:
        self.node = node
        self.status = status

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value, parsed by prometheus_client."""
        result = http("GET", self.status + "/metrics")
        assert result.status == 200, result.body
        assert result.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(result.body.decode("utf-8")):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@pytest.fixture(scope="module", params=FRONTENDS)
def status_node(request: pytest.FixtureRequest) -> Iterator[StatusNode]:
    """One node per front-end with status_listen on a free port."""
    port = free_port()
    with running_node(
        {"KONG_STATUS_LISTEN": f"127.0.0.1:{port}", "KONG_PROXY_FRONTEND": request.param}
    ) as node:
        yield StatusNode(node, f"http://127.0.0.1:{port}")


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_node_gauges(status_node: StatusNode) -> None:
    """A fresh node reports its datastore reachable, itself alive and no invalidation lag."""
    samples = status_node.scrape()
    assert _get(samples, "kong_datastore_reachable") == 1
    assert _get(samples, "kongtx_cluster_members", status="alive") == 1
    assert _get(samples, "kongtx_cluster_members", status="failed") == 0
    assert _get(samples, "kongtx_invalidation_lag_seconds") == 0


def test_requests_latency_and_bandwidth(status_node: StatusNode, upstream: Upstream) -> None:
    """Proxied requests are counted by API and status, timed, and their bytes added up."""
    node = status_node.node
    name = f"metrics-{free_port()}"
    node.add_api(name=name, request_host=f"{name}.test", upstream_url=upstream.url)
    before = status_node.scrape()
    for _ in range(3):
        r = http("POST", node.proxy + "/status/200", b"x" * 1000, {"Host": f"{name}.test"})
        assert r.status == 200
    r = http("GET", node.proxy + "/status/503", headers={"Host": f"{name}.test"})
    assert r.status == 503
    after = status_node.scrape()

    def delta(sample: str, **labels: str) -> float:
        return _get(after, sample, **labels) - _get(before, sample, **labels)

    assert delta("kong_http_requests_total", api=name, code="200") == 3
    assert delta("kong_http_requests_total", api=name, code="503") == 1
    for kind in ("kong", "upstream", "request"):
        assert delta("kong_latency_ms_count", api=name, type=kind) == 4
        assert delta("kong_latency_ms_bucket", api=name, type=kind, le="+Inf") == 4
    assert delta("kong_bandwidth_bytes_total", api=name, type="ingress") >= 3000
    assert delta("kong_bandwidth_bytes_total", api=name, type="egress") > 0


def test_plugin_rejection_is_counted(status_node: StatusNode, upstream: Upstream) -> None:
    """A request a plugin refuses (key-auth 401) is counted with its status, no upstream time."""
    node = status_node.node
    name = f"guarded-{free_port()}"
    api = node.add_api(name=name, request_host=f"{name}.test", upstream_url=upstream.url)
    node.add_plugin(api, "key-auth")
    r = http("GET", node.proxy + "/", headers={"Host": f"{name}.test"})
    assert r.status == 401
    samples = status_node.scrape()
    assert _get(samples, "kong_http_requests_total", api=name, code="401") == 1
    assert _get(samples, "kong_latency_ms_count", api=name, type="request") == 1
    assert _get(samples, "kong_latency_ms_count", api=name, type="upstream") == 0


def test_upstream_target_health(status_node: StatusNode, upstream: Upstream) -> None:
    """kong_upstream_target_health follows GET /upstreams/{u}/health on this node."""
    node = status_node.node
    name = f"metered-{free_port()}.test"
    target = f"127.0.0.1:{upstream.ports['http']}"
    node.admin_call("POST", "/upstreams", {"name": name})
    node.admin_call("POST", f"/upstreams/{name}/targets", {"target": target})
    samples = status_node.scrape()
    assert (
        _get(
            samples,
            "kong_upstream_target_health",
            upstream=name,
            target=target,
            state="healthchecks_off",
        )
        == 1
    )
    r = http("POST", f"{node.admin}/upstreams/{name}/targets/{target}/unhealthy")
    assert r.status == 204
    samples = status_node.scrape()
    assert (
        _get(
            samples, "kong_upstream_target_health", upstream=name, target=target, state="unhealthy"
        )
        == 1
    )
    assert (
        _get(samples, "kong_upstream_target_health", upstream=name, target=target, state="healthy")
        == 0
    )


def test_only_metrics_is_served(status_node: StatusNode) -> None:
    """The status listener serves /metrics only: other paths 404, writes 405."""
    assert http("GET", status_node.status + "/apis").status == 404
    assert http("POST", status_node.status + "/metrics", b"").status == 405


def test_off_by_default(kong_node: Node) -> None:
    """Without status_listen the node's configuration has no status listener."""
    config = kong_node.admin_call("GET", "/")["configuration"]
    assert config.get("status_listen") in (None, "off")


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def metered_pair() -> Iterator[tuple[Any, list[str]]]:
    """Two nodes sharing a fresh PostgreSQL database, each with status_listen on."""
    from tests.cluster.support import Cluster
    from tests.servers.postgres import drop_database, fresh_database, server

    db = fresh_database(server(), "e2e_metrics_cluster")
    cluster = Cluster(db)
    urls: list[str] = []
    try:
        for _ in range(2):
            port = free_port()
            cluster.add(KONG_STATUS_LISTEN=f"127.0.0.1:{port}")
            urls.append(f"http://127.0.0.1:{port}")
        yield cluster, urls
    finally:
        cluster.stop()
        drop_database(db)


def test_cluster_members_and_lag(metered_pair: tuple[Any, list[str]]) -> None:
    """Both nodes see two alive members and no lag once a change has propagated; a killed
    node shows as failed on the other."""
    from tests.cluster.support import kill, wait_for

    cluster, urls = metered_pair
    a, b = cluster.nodes
    status_a, status_b = (StatusNode(n, u) for n, u in zip((a, b), urls, strict=True))

    def alive(s: StatusNode) -> float:
        return _get(s.scrape(), "kongtx_cluster_members", status="alive")

    assert wait_for(lambda: alive(status_a) == 2 and alive(status_b) == 2, 30)
    a.admin_call("POST", "/consumers", {"username": f"lag-{free_port()}"})
    assert wait_for(lambda: _get(status_b.scrape(), "kongtx_invalidation_lag_seconds") == 0, 15)
    for s in (status_a, status_b):
        assert _get(s.scrape(), "kong_datastore_reachable") == 1
    kill(b)
    assert wait_for(
        lambda: _get(status_a.scrape(), "kongtx_cluster_members", status="failed") == 1, 30
    )
    assert alive(status_a) == 1


def test_lag_shows_until_catch_up(metered_pair: tuple[Any, list[str]]) -> None:
    """A node deaf to gossip shows a growing lag for a change it has not applied, until its
    catch-up from the durable log brings it (then the lag is 0 again)."""
    from tests.cluster.support import wait_for

    cluster, _ = metered_pair
    port = free_port()
    deaf = cluster.add(
        KONG_STATUS_LISTEN=f"127.0.0.1:{port}",
        KONGTX_TEST_GOSSIP_LOSS="1.0",
        KONG_DB_UPDATE_FREQUENCY="12",
    )
    status = StatusNode(deaf, f"http://127.0.0.1:{port}")
    assert _get(status.scrape(), "kongtx_invalidation_lag_seconds") == 0
    cluster.nodes[0].admin_call("POST", "/consumers", {"username": f"deaf-{port}"})
    assert wait_for(lambda: _get(status.scrape(), "kongtx_invalidation_lag_seconds") > 0, 6)
    assert wait_for(lambda: _get(status.scrape(), "kongtx_invalidation_lag_seconds") == 0, 30)
