"""Helpers for real multi-node cluster tests: nodes sharing one PostgreSQL.

Each node is a real ``twistd -n kong`` process (tests/e2e/proxy_support.Node) on
free 127.0.0.1 ports, ``cluster_profile=local`` so failures are detected in
seconds, and a short ``db_update_frequency`` so catch-up tests stay short.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.proxy_support import REPO, Node, Upstream, free_port, http
from tests.servers.postgres import PostgresServer

ECHO = os.path.join(REPO, "tests", "e2e", "echo_upstream.py")


def pg_env(pg: PostgresServer) -> dict[str, str]:
    """KONG_* settings for a node on ``pg``."""
    return {
        "KONG_DATABASE": "postgres",
        "KONG_PG_HOST": pg.host,
        "KONG_PG_PORT": str(pg.port),
        "KONG_PG_USER": pg.user,
        "KONG_PG_PASSWORD": pg.password or "",
        "KONG_PG_DATABASE": pg.database,
    }


class Cluster:
    """Nodes started on one database; stops them all (never leaves processes behind).

    ``db`` is a PostgresServer or the KONG_* settings of another datastore.
    """

    def __init__(
        self, db: PostgresServer | dict[str, str], extra_env: dict[str, str] | None = None
    ) -> None:
        self.db_env = pg_env(db) if isinstance(db, PostgresServer) else dict(db)
        self.extra_env = dict(extra_env or {})
        self.nodes: list[Node] = []
        self.tmp = tempfile.mkdtemp(prefix="kongtx-cluster-")

    def add(self, start: bool = True, **env: str) -> Node:
        """A new node (own prefix and ports) on the shared database."""
        index = len(self.nodes)
        prefix = os.path.join(self.tmp, f"n{index}", "prefix")
        os.makedirs(os.path.dirname(prefix))
        ports = {
            "proxy": free_port(),
            "proxy_ssl": free_port(),
            "admin": free_port(),
            "cluster": free_port(udp_too=True),
            "cluster_rpc": free_port(),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        base.update(
            PYTHONPATH=os.pathsep.join(filter(None, [REPO, base.get("PYTHONPATH")])),
            KONG_PREFIX=prefix,
            KONG_PROXY_LISTEN=f"127.0.0.1:{ports['proxy']}",
            KONG_PROXY_LISTEN_SSL=f"127.0.0.1:{ports['proxy_ssl']}",
            KONG_ADMIN_LISTEN=f"127.0.0.1:{ports['admin']}",
            KONG_CLUSTER_LISTEN=f"127.0.0.1:{ports['cluster']}",
            KONG_CLUSTER_LISTEN_RPC=f"127.0.0.1:{ports['cluster_rpc']}",
            KONG_CLUSTER_PROFILE="local",
            KONG_CLUSTER_TTL_ON_FAILURE="60",
            KONG_DB_UPDATE_FREQUENCY="1",
            KONG_ANONYMOUS_REPORTS="off",
            # the node serves the proxy itself unless a test asks for worker processes
            KONG_NGINX_WORKER_PROCESSES="1",
        )
        base.update(self.db_env)
        base.update(self.extra_env)
        base.update(env)
        node = Node(prefix, base, ports)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def members(node: Node) -> dict[str, str]:
    """name -> status from the node's ``GET /cluster``."""
    data = node.admin_call("GET", "/cluster")
    return {m["name"]: m["status"] for m in data["data"]}


def name_of(node: Node) -> str:
    """The node's cluster name: its own entry (by gossip port) in ``GET /cluster``."""
    port = node.ports["cluster"]
    for m in node.admin_call("GET", "/cluster")["data"]:
        if m["address"].endswith(f":{port}"):
            return str(m["name"])
    raise AssertionError("node not in its own member list")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll until ``predicate()`` holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, AssertionError):
            pass
        time.sleep(interval)
    return predicate()


def start_upstream() -> Upstream:
    """The e2e echo upstream in its own process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, ECHO], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError("echo upstream did not start")
    return Upstream(process, json.loads(line))


def proxy_status(node: Node, path: str) -> int:
    """Status of ``GET <path>`` through the node's proxy."""
    return http("GET", node.proxy + path, timeout=5).status


def udp_send(port: int, data: bytes) -> None:
    """One datagram to 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


def cached(node: Node, key: str) -> bool:
    """Whether ``key`` is in the node's cache (``GET /cache/<key>``)."""
    return http("GET", f"{node.admin}/cache/{key}").status == 200


def kill(node: Node) -> None:
    """SIGKILL: no leave, no row deletion."""
    assert node.process is not None
    node.process.kill()
    node.process.wait(10)


def wait_all(nodes: list[Node], check: Callable[[Node], Any], timeout: float) -> None:
    """Assert ``check(node)`` becomes true on every node within ``timeout``."""
    for node in nodes:
        assert wait_for(lambda n=node: bool(check(n)), timeout), f"not honoured on {node.admin}"
