"""Gossip stays responsive when a node is busy proxying (wrk saturating its proxy).

Two nodes on the ``lan`` profile (500 ms probe timeout, Serf's default); node B's
proxy is loaded by ``wrk`` for 15 s while we sample both member lists: B must never
be seen failed, and a change made through A during the load must reach B.
Skipped (loudly) without ``wrk``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cluster.support import Cluster, members, name_of, proxy_status, wait_for
from tests.e2e.proxy_support import Upstream
from tests.servers.postgres import PostgresServer

WRK = shutil.which("wrk")


@pytest.fixture(scope="module")
def pair(pg: PostgresServer) -> Iterator[Cluster]:
    """Two nodes on the lan profile."""
    if WRK is None:
        print("\n*** wrk not installed: busy-node gossip test skipped", file=sys.stderr)
        pytest.skip("wrk not installed (apt-get install wrk)")
    c = Cluster(pg, {"KONG_CLUSTER_PROFILE": "lan", "KONG_DB_UPDATE_FREQUENCY": "30"})
    try:
        c.add()
        c.add()
        yield c
    finally:
        c.stop()


def test_busy_node_is_never_marked_failed(pair: Cluster, upstream: Upstream) -> None:
    """Under proxy load B stays alive in A's view and still receives invalidations at once."""
    a, b = pair.nodes
    assert wait_for(lambda: all(len(members(n)) == 2 for n in (a, b)), 20)
    name_b = name_of(b)
    a.add_api(name="busy", request_path="/busy", upstream_url=upstream.url)
    assert wait_for(lambda: proxy_status(b, "/busy") == 200, 5)
    assert WRK is not None
    load = subprocess.Popen(
        [WRK, "-t1", "-c50", "-d15s", f"{b.proxy}/busy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        seen = set()
        deadline = time.monotonic() + 15
        changed = False
        while time.monotonic() < deadline:
            seen.add(members(a).get(name_b))
            if not changed and time.monotonic() > deadline - 10:
                a.add_api(name="during", request_path="/during", upstream_url=upstream.url)
                # catch-up is 30 s here: only the doorbell can deliver this in time
                assert wait_for(lambda: proxy_status(b, "/during") == 200, 5)
                changed = True
            time.sleep(0.2)
    finally:
        out, _ = load.communicate(timeout=30)
    assert b"Requests/sec" in out, out
    assert "failed" not in seen, seen
    assert members(b).get(name_of(a)) == "alive"
