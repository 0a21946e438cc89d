# -*- test-case-name: tests.unit.test_cluster_cli -*-
"""``kong cluster members|keygen|reachability|force-leave``: the cluster's CLI side.

Kong 0.9 shelled out to ``serf`` against its agent's RPC port; kongtx's node
serves ``cluster_listen_rpc`` itself (kongtx.cluster.rpc, one JSON line each
way), and these functions are its client.  They are blocking on purpose: the
CLI is a short-lived process with no reactor.  Each returns the lines to print
(Kong's wording) or raises :class:`ClusterCliError` with the message to show.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from kongtx.cluster import codec
from kongtx.config import Address

Call = Callable[[dict[str, Any]], Any]


class ClusterCliError(Exception):
    """The node could not be asked, or refused the request; the message is for the operator."""


def rpc_call(address: Address, request: dict[str, Any], timeout: float = 15.0) -> Any:
    """Send one request to the node's RPC port and return its result."""
    host = "127.0.0.1" if address.host in ("0.0.0.0", "") else address.host
    try:
        with socket.create_connection((host, address.port), timeout=timeout) as conn:
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise ClusterCliError(
            f"could not reach the cluster RPC at {host}:{address.port}: {e}"
        ) from e
    try:
        reply = json.loads(data)
    except ValueError as e:
        raise ClusterCliError("the node sent an unreadable answer") from e
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ClusterCliError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply.get("result")


def caller(address: Address) -> Call:
    """An RPC caller bound to ``cluster_listen_rpc``."""
    return lambda request: rpc_call(address, request)


def keygen() -> list[str]:
    """A fresh base64 16-byte ``cluster_encrypt_key`` (Kong's length; serf takes it)."""
    return [codec.keygen(16)]


def members(call: Call) -> list[str]:
    """``<name>\\t<address>\\t<status>`` per member (Kong's ``cluster members``)."""
    return [f"{m['name']}\t{m['address']}\t{m['status']}" for m in call({"command": "members"})]


def reachability(call: Call) -> tuple[list[str], bool]:
    """serf reachability's report and whether every live node answered."""
    result = call({"command": "reachability"})
    lines = [
        f"Total members: {result.get('members')}, live members: {result.get('live')}",
        "Starting reachability test...",
    ]
    failed = list(result.get("failed") or [])
    if not failed:
        lines.append("Successfully contacted all live nodes")
        return lines, True
    lines.append(f"Following live members did not respond to query ({len(failed)}):")
    lines += [f"\t{name}" for name in failed]
    return lines, False


def force_leave(call: Call, node: str) -> list[str]:
    """Kong's ``force-leaving <node>`` … ``left node <node>``."""
    if not node:
        raise ClusterCliError("you need to specify the node to force-leave")
    call({"command": "force-leave", "name": node})
    return [f"force-leaving {node}", f"left node {node}"]
