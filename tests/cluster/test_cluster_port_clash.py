"""A second node on a taken cluster port refuses to start (Kong 0.9's second Serf killed the first)."""

from __future__ import annotations

import shutil
import socket
import tempfile

import pytest

from tests.e2e.proxy_support import free_port, new_node


def test_taken_gossip_port_stops_the_start_with_one_line() -> None:
    """With the UDP gossip port held by another socket, the node exits non-zero naming the cluster."""
    tmp = tempfile.mkdtemp(prefix="kongtx-clash-")
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = free_port(udp_too=True)
        holder.bind(("127.0.0.1", port))
        node = new_node(tmp, {"KONG_CLUSTER_LISTEN": f"127.0.0.1:{port}"})
        node.ports["cluster"] = port
        with pytest.raises(RuntimeError, match="node exited with 1"):
            node.start()
        assert "could not start the cluster agent" in node.log()
    finally:
        holder.close()
        shutil.rmtree(tmp, ignore_errors=True)
