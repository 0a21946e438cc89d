"""WebSockets through a real node: the Upgrade is proxied and frames flow both ways."""

from __future__ import annotations

import uuid

import pytest
from proxy_support import Node, Upstream
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def test_websocket_echo(kong_node: Node, upstream: Upstream) -> None:
    """A websockets client talks to a websockets server through the proxy, both directions."""
    path = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(
        request_path=path,
        strip_request_path=True,
        upstream_url=f"http://127.0.0.1:{upstream.ws_port}",
    )
    url = f"ws://127.0.0.1:{kong_node.ports['proxy']}{path}/"
    with connect(url, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        big = "x" * 200_000
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"


def test_websocket_by_host(kong_node: Node, upstream: Upstream) -> None:
    """An upgrade routed by Host works the same; the plain API stays usable afterwards."""
    host = f"ws-{uuid.uuid4().hex[:8]}.test"
    kong_node.add_api(request_host=host, upstream_url=f"http://127.0.0.1:{upstream.ws_port}")
    url = f"ws://127.0.0.1:{kong_node.ports['proxy']}/chat"
    with connect(url, additional_headers={"Host": host}, open_timeout=10) as ws:
        for i in range(20):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"m{i}"


def test_websocket_no_api(kong_node: Node) -> None:
    """An upgrade for no API gets the ordinary 404."""
    url = f"ws://127.0.0.1:{kong_node.ports['proxy']}/nothing-{uuid.uuid4().hex}"
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=10):
            pass
    assert info.value.response.status_code == 404


def test_websocket_to_plain_http_upstream(kong_node: Node, upstream: Upstream) -> None:
    """An upstream that refuses the upgrade answers the client itself (no 101, no hang)."""
    path = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(request_path=path, upstream_url=upstream.url)
    url = f"ws://127.0.0.1:{kong_node.ports['proxy']}{path}"
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=10):
            pass
    assert info.value.response.status_code == 200


def test_websocket_over_tls(kong_node: Node, upstream: Upstream) -> None:
    """wss:// to the proxy's TLS listener is spliced to a plain ws upstream."""
    import ssl

    path = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(
        request_path=path,
        strip_request_path=True,
        upstream_url=f"http://127.0.0.1:{upstream.ws_port}",
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"wss://127.0.0.1:{kong_node.ports['proxy_ssl']}{path}/"
    with connect(url, ssl=ctx, open_timeout=10) as ws:
        for size in (10, 100_000):
            ws.send("y" * size)
            assert ws.recv(timeout=10) == "y" * size
