"""Target health shared across a cluster (issue 9): three real nodes on one PostgreSQL.

An upstream with two targets and passive checks only (one failure is enough,
no probes).  Target "two" fails only for traffic sent through node 1; nodes 2
and 3 never see a failure, yet stop routing to it, because node 1's verdict
travels as a ``kongtx-health`` gossip event.  An operator's ``POST .../healthy``
on node 3 then brings it back on nodes 1 and 2.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.support import Cluster, members, wait_for
from tests.e2e.health_backend import Backend, admin, balanced_api, health, running
from tests.e2e.proxy_support import Node, http
from tests.servers.postgres import PostgresServer

PASSIVE_ONLY = {
    "passive": {"unhealthy": {"http_failures": 1, "tcp_failures": 1}},
}


@pytest.fixture(scope="module")
def cluster(pg: PostgresServer) -> Iterator[Cluster]:
    """Three joined nodes."""
    c = Cluster(pg)
    try:
        for _ in range(3):
            c.add()
        assert wait_for(
            lambda: all(list(members(n).values()).count("alive") == 3 for n in c.nodes), 20
        ), [members(n) for n in c.nodes]
        yield c
    finally:
        c.stop()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, ...]]:
    with running("one", "two") as pair:
        yield pair


def answers(node: Node, path: str, count: int = 12, fail: str | None = None) -> list[str]:
    """Who answered each of ``count`` requests through ``node`` ("name" or "name:500")."""
    headers = {"X-Fail": fail} if fail else {}
    out = []
    for _ in range(count):
        r = http("GET", node.proxy + path + "/", headers=headers, timeout=10)
        name = r.body.decode(errors="replace")
        out.append(name if r.status == 200 else f"{name}:{r.status}")
    return out


def test_a_failure_seen_by_one_node_is_honoured_by_all(
    cluster: Cluster, backends: tuple[Backend, ...]
) -> None:
    """Passive failure on node 1 -> nodes 2 and 3 route only to target one; POST /healthy
    on node 3 -> nodes 1 and 2 route to target two again."""
    node1, node2, node3 = cluster.nodes
    one, two = backends
    name, path = balanced_api(node1, backends, PASSIVE_ONLY)

    # every node balances over both targets (and has built its balancer)
    for n in cluster.nodes:
        assert wait_for(lambda n=n: set(answers(n, path)) == {"one", "two"}, 10), n.log()

    # target two fails, for traffic through node 1 only
    seen = answers(node1, path, 4, fail="two")
    assert "two:500" in seen, seen
    assert wait_for(lambda: set(answers(node1, path, 6, fail="two")) == {"one"}, 5)

    # nodes 2 and 3 never saw a failure, yet route only to target one
    for n in (node2, node3):
        assert wait_for(lambda n=n: set(answers(n, path)) == {"one"}, 10), n.log()
        assert set(answers(n, path, 20)) == {"one"}
        assert health(n, name) == {one.target: "HEALTHY", two.target: "UNHEALTHY"}

    # a node that joins now learns the verdict too (replayed with Serf's recent events)
    node4 = cluster.add()
    assert wait_for(lambda: health(node4, name)[two.target] == "UNHEALTHY", 10), node4.log()
    assert set(answers(node4, path, 20)) == {"one"}

    # an operator on node 3 says it is healthy again: nodes 1 and 2 follow
    status, _ = admin(node3, "POST", f"/upstreams/{name}/targets/{two.target}/healthy")
    assert status == 204
    for n in (node1, node2):
        assert wait_for(lambda n=n: set(answers(n, path)) == {"one", "two"}, 10), n.log()
        assert health(n, name) == {one.target: "HEALTHY", two.target: "HEALTHY"}
    assert set(answers(node3, path)) == {"one", "two"}
