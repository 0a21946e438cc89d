"""No invalidation is lost when gossip loses datagrams (three nodes, 30 % loss).

The test hook ``KONGTX_TEST_GOSSIP_LOSS`` makes every node drop that fraction of
the datagrams it receives; the durable log (gap fill on the next doorbell, the
periodic catch-up) must still bring every change to every proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.support import Cluster, members, proxy_status, wait_all, wait_for
from tests.e2e.proxy_support import Upstream
from tests.servers.postgres import PostgresServer


@pytest.fixture(scope="module")
def lossy(pg: PostgresServer) -> Iterator[Cluster]:
    """Three nodes that each drop 30 % of incoming gossip datagrams."""
    c = Cluster(pg, {"KONGTX_TEST_GOSSIP_LOSS": "0.3"})
    try:
        for _ in range(3):
            c.add()
        yield c
    finally:
        c.stop()


def test_no_invalidation_lost_under_datagram_loss(lossy: Cluster, upstream: Upstream) -> None:
    """30 creates and 30 deletes through node A: B's and C's proxies honour every one."""
    a, b, c = lossy.nodes
    assert wait_for(lambda: all(len(members(n)) == 3 for n in lossy.nodes), 30)
    paths = [f"/lossy{i}" for i in range(30)]
    for p in paths:
        assert proxy_status(b, p) == 404 and proxy_status(c, p) == 404
    apis = [a.add_api(name=p[1:], request_path=p, upstream_url=upstream.url) for p in paths]
    for p in paths:
        wait_all([b, c], lambda n, p=p: proxy_status(n, p) == 200, 5)
    for api in apis:
        a.delete_api(api)
    for p in paths:
        wait_all([b, c], lambda n, p=p: proxy_status(n, p) == 404, 5)
