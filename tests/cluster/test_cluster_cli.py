"""``kong cluster members|reachability|force-leave`` against two real nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.cluster.support import members, name_of, wait_for
from tests.e2e.proxy_support import Node, http, running_nodes


@pytest.fixture(scope="module")
def joined() -> Iterator[tuple[Node, Node]]:
    """Two sqlite nodes, the second joined to the first through POST /cluster."""
    with running_nodes(2, {"KONG_CLUSTER_PROFILE": "local"}) as (a, b):
        reply = http(
            "POST",
            b.admin + "/cluster",
            json.dumps({"address": f"127.0.0.1:{a.ports['cluster']}"}).encode(),
            {"Content-Type": "application/json"},
        )
        assert reply.status == 200, reply.body
        assert wait_for(lambda: len(members(a)) == 2 and len(members(b)) == 2, 10)
        # the CLI finds a running node by its pid file (the test nodes run without one)
        with open(os.path.join(a.prefix, "pids", "kong.pid"), "w") as f:
            f.write(str(a.pid))
        yield a, b


def kong(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kongtx.cli", *args, "-p", node.prefix],
        capture_output=True,
        text=True,
        env=node.env,
        cwd=os.path.dirname(node.prefix),
        timeout=60,
    )


def test_members_lists_both_nodes(joined: tuple[Node, Node]) -> None:
    """One ``name<TAB>address<TAB>status`` line per member."""
    a, b = joined
    out = kong(a, "cluster", "members")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = set(out.stdout.strip().splitlines())
    assert f"{name_of(b)}\t127.0.0.1:{b.ports['cluster']}\talive" in lines
    assert len(lines) == 2


def test_reachability_reports_every_live_node(joined: tuple[Node, Node]) -> None:
    """serf's report: totals, then success when every live node acked."""
    a, _ = joined
    out = kong(a, "cluster", "reachability")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "Total members: 2, live members: 2",
        "Starting reachability test...",
        "Successfully contacted all live nodes",
    ]
