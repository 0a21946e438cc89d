"""Request smuggling through a real node: exact bytes on raw sockets.

Every ambiguous request is refused by the proxy and nothing of it reaches the
upstream; well-formed pipelined requests are served in order, each exactly once.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from proxy_support import Node, Upstream, raw_exchange


@pytest.fixture(scope="module")
def path(kong_node: Node, upstream: Upstream) -> str:
    p = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(request_path=p, strip_request_path=True, upstream_url=upstream.url)
    return p


def marker() -> str:
    return uuid.uuid4().hex[:12]


def reached(upstream: Upstream, mark: str) -> list[list[object]]:
    return [entry for entry in upstream.seen() if mark in str(entry[1])]


def refused(
    kong_node: Node, upstream: Upstream, data: bytes, mark: str, status: bytes = b"400"
) -> bytes:
    out = raw_exchange(kong_node.ports["proxy"], data)
    assert out.startswith(b"HTTP/1.1 " + status), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, out  # the connection closed after the refusal
    time.sleep(0.1)
    assert reached(upstream, mark) == []
    return out


CASES = {
    "cl-te": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {p}/{m}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-cl": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n5c\r\nGET {p}/{m}-smuggled HTTP/1.1\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    "te-identity": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    "te-twice": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-list": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"0\r\n\r\n",
    "te-folded": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    "te-http10": b"POST {p}/{m} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-twice-differing": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Content-Length: 40\r\n\r\nabcd",
    "cl-list": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 40\r\n\r\nabcd",
    "cl-signed": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    "cl-hex": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 0x4\r\n\r\nabcd",
    "chunk-size-hex-prefix": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0x4\r\nabcd\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n10000000000000004\r\nabcd\r\n0\r\n\r\n",
    "chunk-size-negative": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n-4\r\nabcd\r\n0\r\n\r\n",
    "chunk-no-crlf": b"POST {p}/{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n4\r\nabcdX0\r\n\r\n",
    "obs-fold": b"GET {p}/{m} HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tX-B: 2\r\n\r\n",
    "bare-lf-header": b"GET {p}/{m} HTTP/1.1\r\nHost: x\nContent-Length: 4\r\n\r\nabcd",
    "nul-in-header": b"GET {p}/{m} HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ambiguous_request_refused(
    case: str, kong_node: Node, upstream: Upstream, path: str
) -> None:
    """Each ambiguous framing is answered 400 and closed; the upstream sees nothing."""
    mark = marker()
    data = CASES[case].replace(b"{p}", path.encode()).replace(b"{m}", mark.encode())
    refused(kong_node, upstream, data, mark)


def test_oversized_headers_431(kong_node: Node, upstream: Upstream, path: str) -> None:
    """Headers over client_max_header_size (8k): 431, nothing upstream."""
    mark = marker()
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 200) for i in range(60))
    data = f"GET {path}/{mark} HTTP/1.1\r\nHost: x\r\n".encode() + big + b"\r\n"
    refused(kong_node, upstream, data, mark, b"431")


def test_long_uri_414(kong_node: Node, upstream: Upstream, path: str) -> None:
    """A request line over the limit: 414, nothing upstream."""
    mark = marker()
    data = f"GET {path}/{mark}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    refused(kong_node, upstream, data, mark, b"414")


def test_pipelined_requests_not_confused(kong_node: Node, upstream: Upstream, path: str) -> None:
    """Pipelined requests with bodies are each forwarded once, in order, bodies intact."""
    mark = marker()
    data = (
        f"POST {path}/{mark}-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode()
        + f"POST {path}/{mark}-2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n".encode()
        + f"GET {path}/{mark}-3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    out = raw_exchange(kong_node.ports["proxy"], data, timeout=10)
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    seen = reached(upstream, mark)
    assert [(m, u.rsplit("/", 1)[1], n) for m, u, n in seen] == [  # type: ignore[misc]
        ("POST", f"{mark}-1", 5),
        ("POST", f"{mark}-2", 3),
        ("GET", f"{mark}-3", 0),
    ]


def test_body_of_unrouted_request_not_parsed_as_request(
    kong_node: Node, upstream: Upstream, path: str
) -> None:
    """A body that looks like a request, sent to no API, is never taken for the next request."""
    mark = marker()
    inner = f"GET {path}/{mark}-inner HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    data = (
        b"POST /no-such-api-"
        + mark.encode()
        + b" HTTP/1.1\r\nHost: nowhere\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(inner)
        + inner
        + f"GET {path}/{mark}-next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    out = raw_exchange(kong_node.ports["proxy"], data, timeout=10)
    assert out.startswith(b"HTTP/1.1 404")
    assert out.count(b"HTTP/1.1 ") == 2
    assert [u for _, u, _ in reached(upstream, mark)] == [f"/{mark}-next"]  # type: ignore[misc]


def read_response(sock: socket.socket) -> bytes:
    """One whole response (Content-Length or chunked framing): a response may arrive in
    several segments (the last chunk is its own send), so one recv() is not enough."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            body += chunk
    else:
        length = int(lowered.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, data
            body += chunk
    return head + b"\r\n\r\n" + body


def test_refusal_after_good_request_keeps_first(
    kong_node: Node, upstream: Upstream, path: str
) -> None:
    """A good request then a bad one on the same connection: the first served, the second refused."""
    mark = marker()
    with socket.create_connection(("127.0.0.1", kong_node.ports["proxy"]), timeout=10) as sock:
        sock.sendall(f"GET {path}/{mark}-good HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(
            f"POST {path}/{mark}-bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()
        )
        second = sock.recv(65536)
    assert second.startswith(b"HTTP/1.1 400")
    assert [u for _, u, _ in reached(upstream, mark)] == [f"/{mark}-good"]  # type: ignore[misc]
