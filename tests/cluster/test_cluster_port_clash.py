"""A second node on a taken cluster port refuses to start (Kong 0.9's second Serf killed the first)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

from tests.e2e.proxy_support import Node, free_port


def test_taken_gossip_port_stops_the_start_with_one_line() -> None:
    """With the UDP gossip port held by another socket, the node exits non-zero naming the cluster."""
    tmp = tempfile.mkdtemp(prefix="kongtx-clash-")
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = free_port(udp_too=True)
        holder.bind(("127.0.0.1", port))
        prefix = os.path.join(tmp, "prefix")
        ports = {k: free_port() for k in ("proxy", "proxy_ssl", "admin", "cluster_rpc")}
        ports["cluster"] = port
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        env.update(
            PYTHONPATH=repo,
            KONG_PREFIX=prefix,
            KONG_DATABASE="sqlite",
            KONG_PROXY_LISTEN=f"127.0.0.1:{ports['proxy']}",
            KONG_PROXY_LISTEN_SSL=f"127.0.0.1:{ports['proxy_ssl']}",
            KONG_ADMIN_LISTEN=f"127.0.0.1:{ports['admin']}",
            KONG_CLUSTER_LISTEN=f"127.0.0.1:{port}",
            KONG_CLUSTER_LISTEN_RPC=f"127.0.0.1:{ports['cluster_rpc']}",
            KONG_ANONYMOUS_REPORTS="off",
        )
        node = Node(prefix, env, ports)
        with pytest.raises(RuntimeError, match="node exited with 1"):
            node.start()
        assert "could not start the cluster agent" in node.log()
    finally:
        holder.close()
        shutil.rmtree(tmp, ignore_errors=True)
