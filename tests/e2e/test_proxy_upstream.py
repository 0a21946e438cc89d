"""The upstream request and the response through a real node (SPEC §3.2-3.5)."""

from __future__ import annotations

import http.client as httplib
import json
import socket
import subprocess
import time
import uuid
from typing import Any

from proxy_support import Node, Upstream, free_port, http


def uniq(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def headers_of(body: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def path_api(node: Node, upstream_url: str, **kw: Any) -> str:
    path = "/" + uniq()
    node.add_api(request_path=path, upstream_url=upstream_url, **kw)
    return path


def test_forwarding_headers(kong_node: Node, upstream: Upstream) -> None:
    """Host is the upstream's; X-Real-IP, X-Forwarded-For (peer appended), -Proto are set."""
    path = path_api(kong_node, upstream.url)
    r = http(
        "GET", kong_node.proxy + path, headers={"X-Forwarded-For": "6.6.6.6", "my_header": "kept"}
    )
    h = headers_of(r.json())
    assert h["host"] == [f"127.0.0.1:{upstream.ports['http']}"]
    assert h["x-real-ip"] == ["127.0.0.1"]  # trusted_ips is empty: XFF not believed
    assert h["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["my_header"] == ["kept"]


def test_preserve_host(kong_node: Node, upstream: Upstream) -> None:
    """preserve_host sends the client's Host (port kept on a path match)."""
    path = path_api(kong_node, upstream.url, preserve_host=True)
    r = http("GET", kong_node.proxy + path, headers={"Host": "client.example:1234"})
    assert headers_of(r.json())["host"] == ["client.example:1234"]


def test_query_reencoded(kong_node: Node, upstream: Upstream) -> None:
    """The query string goes upstream sorted and re-encoded with lower-case hex."""
    path = path_api(kong_node, upstream.url)
    r = http("GET", kong_node.proxy + path + "?z=a%2Fb&a=x+y&flag&e=")
    assert r.json()["query"] == "a=x%20y&e&flag&z=a%2fb"


def test_body_and_method(kong_node: Node, upstream: Upstream) -> None:
    """Method and body reach the upstream intact, chunked uploads included."""
    path = path_api(kong_node, upstream.url)
    r = http("PATCH", kong_node.proxy + path, b'{"a": 1}', {"Content-Type": "application/json"})
    body = r.json()
    assert body["method"] == "PATCH" and body["body"] == '{"a": 1}'
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    conn.putrequest("POST", path)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    resp = conn.getresponse()

    echoed = json.loads(resp.read())
    assert echoed["body"] == "hello world"
    # streamed as it arrived: re-chunked upstream, never with the client's framing
    assert headers_of(echoed)["transfer-encoding"] == ["chunked"]
    assert "content-length" not in headers_of(echoed)
    conn.close()


def test_chunked_upload_streams_before_it_ends(kong_node: Node, upstream: Upstream) -> None:
    """A chunked upload reaches the upstream while the client is still sending it."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    mark = uuid.uuid4().hex[:8]
    with socket.create_connection(("127.0.0.1", kong_node.ports["proxy"]), timeout=10) as sock:
        sock.sendall(
            f"POST {path}/{mark} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.sendall(b"4\r\nabcd\r\n")
        time.sleep(0.5)
        # the upstream has the request (headers and first chunk) before the body ended
        assert upstream_has_open_request(upstream, kong_node, mark)
        sock.sendall(b"3\r\nefg\r\n0\r\n\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b'"body": "abcdefg"' in data


def upstream_has_open_request(upstream: Upstream, node: Node, mark: str) -> bool:
    """True when the proxy already holds an upstream connection for the request.

    The echo upstream records a request only once its body is complete, so instead
    this looks at the node's open sockets to the upstream's port.
    """
    port = upstream.ports["http"]
    try:
        out = subprocess.run(["ss", "-tnp"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return True  # no ss here: nothing to check with
    return any(f":{port}" in line and f"pid={node.pid}," in line for line in out.splitlines())


def test_early_answer_to_a_streamed_upload_closes(kong_node: Node) -> None:
    """A large upload answered before it ended (no API): the answer says close, and closes."""
    with socket.create_connection(("127.0.0.1", kong_node.ports["proxy"]), timeout=10) as sock:
        sock.sendall(
            b"POST /no-api-here HTTP/1.1\r\nHost: nowhere\r\nContent-Length: 10000000\r\n\r\n"
            + b"x" * 100000
        )
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 404")
    assert b"Connection: close" in data


def test_response_headers(kong_node: Node, upstream: Upstream) -> None:
    """Upstream status and headers pass (its own Server too), plus Via and latency headers."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    r = http("GET", kong_node.proxy + path + "/status/418")
    assert r.status == 418
    assert r.header("X-Upstream") == "yes"
    assert r.header("Via") == "kong/0.9.9"
    assert int(r.header("X-Kong-Proxy-Latency") or "-1") >= 0
    assert int(r.header("X-Kong-Upstream-Latency") or "-1") >= 0
    assert r.body == b"from upstream"  # no error page for upstream errors
    ok = http("GET", kong_node.proxy + path + "/")
    assert ok.header("Server") == "echo-upstream"


def test_the_upstreams_reason_phrase_is_relayed(kong_node: Node, upstream: Upstream) -> None:
    """As nginx relays the upstream's status line (so Kong 0.9): its own reason phrase
    reaches the client, a standard one too; the next response on the connection has its own."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    for code, reason, expected in (
        (200, "Totally%20Fine", "Totally Fine"),
        (404, None, "Not Found"),
        (299, "Custom", "Custom"),
        (200, None, "OK"),
    ):
        query = "" if reason is None else f"?reason={reason}"
        conn.request("GET", f"{path}/status/{code}{query}")
        resp = conn.getresponse()
        assert (resp.status, resp.reason, resp.read()) == (code, expected, b"from upstream")
    conn.close()


def test_keepalive_reuses_upstream_connections(kong_node: Node, upstream: Upstream) -> None:
    """Sequential requests reuse one pooled upstream connection (HTTP/1.1 keep-alive)."""
    path = path_api(kong_node, upstream.url)
    seen = {http("GET", kong_node.proxy + path).json()["connection"] for _ in range(5)}
    assert len(seen) == 1


def test_https_upstream_with_sni(kong_node: Node, upstream: Upstream) -> None:
    """An https upstream gets SNI, its self-signed cert is accepted, Host has :port."""
    path = path_api(kong_node, upstream.https_url)
    r = http("GET", kong_node.proxy + path)
    assert r.status == 200, r.body
    body = r.json()
    assert body["sni"] == "localhost"
    assert headers_of(body)["host"] == [f"localhost:{upstream.ports['https']}"]


def test_refused_is_502(kong_node: Node) -> None:
    """A refused upstream connection: 502 with the Accept-chosen body and Server."""
    path = path_api(kong_node, f"http://127.0.0.1:{free_port()}")
    r = http("GET", kong_node.proxy + path, headers={"Accept": "application/json"})
    assert r.status == 502
    assert r.json() == {"message": "An invalid response was received from the upstream server"}
    assert r.header("Server") == "kong/0.9.9"
    html = http("GET", kong_node.proxy + path, headers={"Accept": "text/html"})
    assert b"<h1>Kong Error</h1>" in html.body
    plain = http("GET", kong_node.proxy + path)
    assert plain.body == b"An invalid response was received from the upstream server"


def test_unresolvable_is_502(kong_node: Node) -> None:
    """An upstream name that does not resolve: 502."""
    path = path_api(kong_node, "http://does-not-exist.invalid")
    assert http("GET", kong_node.proxy + path).status == 502


def test_read_timeout_is_504(kong_node: Node, upstream: Upstream) -> None:
    """An upstream slower than upstream_read_timeout (1.5 s here): 504 after about that."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    started = time.monotonic()
    r = http(
        "GET", kong_node.proxy + path + "/stall?seconds=5", headers={"Accept": "application/json"}
    )
    elapsed = time.monotonic() - started
    assert r.status == 504
    assert r.json() == {"message": "The upstream server is timing out"}
    assert 1.3 < elapsed < 4.5


def test_stall_mid_body_aborts_client(kong_node: Node, upstream: Upstream) -> None:
    """An upstream stalling mid-body past the read timeout: the client connection is cut."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    conn.request("GET", path + "/stall-body?seconds=5")
    resp = conn.getresponse()
    assert resp.status == 200
    started = time.monotonic()
    try:
        resp.read()
        raise AssertionError("the stalled body was read as complete")
    except (httplib.IncompleteRead, ConnectionError):
        pass
    # cut by the proxy's read timeout (1.5 s), not by the upstream finishing at 5 s
    assert time.monotonic() - started < 4.5
    conn.close()


def test_upstream_cut_mid_body_aborts_client(kong_node: Node, upstream: Upstream) -> None:
    """An upstream that closes mid-body: the client never sees a clean end."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    conn.request("GET", path + "/cut")
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == "100"
    try:
        resp.read()
        raise AssertionError("the truncated body was read as complete")
    except (httplib.IncompleteRead, ConnectionError):
        pass
    conn.close()


def test_head_and_bodyless_statuses(kong_node: Node, upstream: Upstream) -> None:
    """HEAD, 204 and 304 responses carry no body and leave the connection usable."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    conn.request("HEAD", path + "/fixed?size=1234")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    for code in (204, 304):
        conn.request("GET", f"{path}/status/{code}")
        resp = conn.getresponse()
        assert resp.status == code and resp.read() == b""
    conn.request("GET", path + "/fixed?size=10")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"x" * 10
    conn.close()


def test_absolute_form_request_target(kong_node: Node, upstream: Upstream) -> None:
    """An absolute-form target (GET http://host/path) routes by its path and host."""
    path = path_api(kong_node, upstream.url, strip_request_path=True)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    conn.request("GET", f"http://whatever.test{path}/abs?x=1")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200
    assert body["path"] == "/abs" and body["query"] == "x=1"
    conn.close()
