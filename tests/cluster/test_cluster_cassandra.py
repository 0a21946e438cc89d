"""Two real kongtx nodes sharing one Cassandra keyspace (the harness's private server).

The same promises as on PostgreSQL, on the other shared backend: the nodes find
each other through the ``nodes`` table, and a change through either Admin API is
honoured by the other node's proxy; with every datagram lost, the log's catch-up
still delivers it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.support import Cluster, members, proxy_status, wait_all, wait_for
from tests.e2e.proxy_support import Upstream
from tests.servers.cassandra import drop_keyspace, server


@pytest.fixture(scope="module")
def cassandra_cluster() -> Iterator[Cluster]:
    """Two nodes on a fresh keyspace."""
    srv = server()
    keyspace = "kt_cluster_" + uuid.uuid4().hex[:8]
    db = {
        "KONG_DATABASE": "cassandra",
        "KONG_CASSANDRA_CONTACT_POINTS": srv.host,
        "KONG_CASSANDRA_PORT": str(srv.port),
        "KONG_CASSANDRA_KEYSPACE": keyspace,
        "KONG_CASSANDRA_TIMEOUT": "30000",
    }
    c = Cluster(db)
    try:
        c.add()
        c.add()
        yield c
    finally:
        c.stop()
        drop_keyspace(srv, keyspace)


def test_nodes_join_and_changes_propagate(cassandra_cluster: Cluster, upstream: Upstream) -> None:
    """Both nodes list each other alive; a create on either is routed by both proxies."""
    nodes = cassandra_cluster.nodes
    assert wait_for(
        lambda: all(list(members(n).values()).count("alive") == 2 for n in nodes), 30
    ), [members(n) for n in nodes]
    for i, origin in enumerate(nodes):
        path = f"/cass{i}"
        for n in nodes:
            assert proxy_status(n, path) == 404
        origin.add_api(name=f"cass{i}", request_path=path, upstream_url=upstream.url)
        wait_all(nodes, lambda n, p=path: proxy_status(n, p) == 200, 10)


def test_catch_up_alone_delivers_when_gossip_is_deaf(
    cassandra_cluster: Cluster, upstream: Upstream
) -> None:
    """A node that drops every gossip datagram still honours changes, from the log (1 s catch-up)."""
    deaf = cassandra_cluster.add(KONGTX_TEST_GOSSIP_LOSS="1.0")
    assert proxy_status(deaf, "/deaf") == 404
    cassandra_cluster.nodes[0].add_api(name="deaf", request_path="/deaf", upstream_url=upstream.url)
    assert wait_for(lambda: proxy_status(deaf, "/deaf") == 200, 10)
