"""The fast front-end's direct writes (kongtx.proxy.direct_write) through a real node.

A response of unknown length is written as chunks as it comes, then the last-chunk
marker: two small segments on one connection.  Without TCP_NODELAY on client
connections, Nagle's algorithm holds the second until the client's delayed ACK
(~40 ms on Linux) and every such response takes 40 ms longer.
"""

from __future__ import annotations

import http.client as httplib
import time
import uuid

from proxy_support import Node, Upstream


def test_small_chunked_responses_are_not_held_by_nagle(kong_node: Node, upstream: Upstream) -> None:
    path = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
    conn = httplib.HTTPConnection("127.0.0.1", kong_node.ports["proxy"], timeout=10)
    try:
        for _ in range(3):  # warm up: pools, caches, the router
            conn.request("GET", f"{path}/stream?size=10&chunk=10")
            assert conn.getresponse().read() == b"x" * 10
        timings = []
        for _ in range(15):
            start = time.monotonic()
            conn.request("GET", f"{path}/stream?size=10&chunk=10")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Transfer-Encoding") == "chunked"
            assert resp.read() == b"x" * 10
            timings.append(time.monotonic() - start)
    finally:
        conn.close()
    timings.sort()
    # Nagle + delayed ACK would put every one at >= 40 ms; a loaded machine makes
    # some slow, not the median.
    assert timings[len(timings) // 2] < 0.03, timings
