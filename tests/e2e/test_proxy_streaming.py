"""Large bodies stream through a real node with flat memory; a client that leaves cancels.

KONG_TEST_STREAM_MB sets the size (default 256 MB each way; the acceptance run
uses 1024).
"""

from __future__ import annotations

import hashlib
import http.client as httplib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from proxy_support import Node, Upstream, running_node

MB = 1024 * 1024
SIZE = int(os.environ.get("KONG_TEST_STREAM_MB", "256")) * MB
#: How much the node's RSS may grow while a SIZE body passes through it.
RSS_BUDGET_KB = 16 * 1024


@pytest.fixture(scope="module")
def kong_node() -> Iterator[Node]:
    """A node whose upstream may take its time digesting a large upload (read timeout 30 s)."""
    with running_node({"KONG_UPSTREAM_READ_TIMEOUT": "30000"}) as node:
        yield node


def stream_api(node: Node, upstream: Upstream) -> str:
    path = "/" + uuid.uuid4().hex[:10]
    node.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
    return path


def test_large_download_flat_rss(kong_node: Node, upstream: Upstream) -> None:
    """A SIZE response streams to a slow-ish client; the node's RSS barely moves."""
    path = stream_api(kong_node, upstream)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=60)
    conn.request("GET", f"{path}/stream?size=1024&chunk=1024")  # warm up pools and caches
    conn.getresponse().read()
    before = kong_node.rss_kb()
    peak = before
    conn.request("GET", f"{path}/stream?size={SIZE}&chunk=65536")
    resp = conn.getresponse()
    assert resp.status == 200
    received = 0
    while chunk := resp.read(1 * MB):
        received += len(chunk)
        if received % (32 * MB) < MB:
            peak = max(peak, kong_node.rss_kb())
    conn.close()
    assert received == SIZE
    assert peak - before < RSS_BUDGET_KB, f"RSS grew {peak - before} kB"


def test_large_upload_flat_rss(kong_node: Node, upstream: Upstream) -> None:
    """A SIZE upload reaches the upstream intact; the node's RSS barely moves."""
    path = stream_api(kong_node, upstream)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=120)
    conn.request("POST", path + "/upload", body=b"warm")
    conn.getresponse().read()
    before = kong_node.rss_kb()
    peak = before
    digest = hashlib.sha256()
    block = os.urandom(MB)

    def body() -> Iterator[bytes]:
        nonlocal peak
        for i in range(SIZE // MB):
            digest.update(block)
            if i % 32 == 0:
                peak = max(peak, kong_node.rss_kb())
            yield block

    conn.request("POST", path + "/upload", body=body(), headers={"Content-Length": str(SIZE)})
    resp = conn.getresponse()
    raw = resp.read()
    assert resp.status == 200, raw
    echoed = json.loads(raw)
    peak = max(peak, kong_node.rss_kb())
    conn.close()
    assert echoed["body_length"] == SIZE
    assert echoed["body_sha256"] == digest.hexdigest()
    assert peak - before < RSS_BUDGET_KB, f"RSS grew {peak - before} kB"


def test_client_gone_cancels_upstream(kong_node: Node, upstream: Upstream) -> None:
    """A client that disconnects mid-stream makes the node drop its upstream request too."""
    path = stream_api(kong_node, upstream)
    aborted_before = upstream.stats()["aborted"]
    with socket.create_connection(("127.0.0.1", kong_node.ports["proxy"]), timeout=10) as sock:
        sock.sendall(
            f"GET {path}/stream?size={1024 * MB}&chunk=65536 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        got = 0
        while got < 4 * MB:
            got += len(sock.recv(65536))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if upstream.stats()["aborted"] > aborted_before:
            break
        time.sleep(0.1)
    assert upstream.stats()["aborted"] > aborted_before


def test_client_gone_while_waiting_cancels_upstream(kong_node: Node, upstream: Upstream) -> None:
    """A client that leaves while the upstream is still thinking cancels the upstream request."""
    path = stream_api(kong_node, upstream)
    aborted_before = upstream.stats()["aborted"]
    with socket.create_connection(("127.0.0.1", kong_node.ports["proxy"]), timeout=10) as sock:
        sock.sendall(f"GET {path}/stall?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
    time.sleep(1.5)
    assert upstream.stats()["aborted"] > aborted_before
