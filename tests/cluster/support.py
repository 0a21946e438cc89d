"""Helpers for real multi-node cluster tests: nodes sharing one PostgreSQL.

Each node is a real ``twistd -n kong`` process (tests/e2e/proxy_support.Node) on
free 127.0.0.1 ports, ``cluster_profile=local`` so failures are detected in
seconds, and a short ``db_update_frequency`` so catch-up tests stay short.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.proxy_support import Node, http, new_node
from tests.servers.postgres import PostgresServer


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
        directory = os.path.join(self.tmp, f"n{len(self.nodes)}")
        os.makedirs(directory)
        extra = {
            "KONG_CLUSTER_PROFILE": "local",
            "KONG_CLUSTER_TTL_ON_FAILURE": "60",
            "KONG_DB_UPDATE_FREQUENCY": "1",
        }
        node = new_node(directory, {**extra, **self.db_env, **self.extra_env, **env})
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
