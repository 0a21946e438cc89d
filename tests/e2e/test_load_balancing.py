"""Load balancing over upstreams and targets (issue 9) through real nodes.

Real ``twistd kong`` processes on sqlite, real HTTP upstream servers on free
127.0.0.1 ports (each answers with its own name), and for DNS a real
twisted.names authoritative server on a free UDP port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from proxy_support import REPO, Node, Upstream, free_port, http, running_node, running_nodes
from websockets.sync.client import connect


class Backend:
    """A real HTTP server answering ``{"name", "host", "path"}``; ``hold`` parks requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def do_GET(self) -> None:
                if backend.hold.is_set():
                    with backend.lock:
                        backend.held += 1
                    backend.release.wait(15)
                    with backend.lock:
                        backend.held -= 1
                body = json.dumps(
                    {"name": backend.name, "host": self.headers.get("Host"), "path": self.path}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backends() -> Iterator[list[Backend]]:
    made = [Backend(f"b{i}") for i in range(3)]
    try:
        yield made
    finally:
        for b in made:
            b.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with running_node({"KONG_UPSTREAM_CONNECT_TIMEOUT": "2000"}) as started:
        yield started


def admin(node: Node, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return node.admin_call(method, path, body)


def balanced_api(node: Node, targets: list[tuple[str, int]], **upstream: Any) -> tuple[str, str]:
    """An upstream with ``targets`` and an API proxying to it: (upstream name, request path)."""
    name = f"lb{free_port()}.test"
    admin(node, "POST", "/upstreams", {"name": name, **upstream})
    for target, weight in targets:
        admin(node, "POST", f"/upstreams/{name}/targets", {"target": target, "weight": weight})
    path = f"/{name.split('.')[0]}"
    node.add_api(
        name=name.split(".")[0],
        request_path=path,
        upstream_url=f"http://{name}",
        strip_request_path=True,
    )
    return name, path


def served_by(node: Node, path: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = http("GET", node.proxy + path, headers=headers or {})
        assert r.status == 200, (r.status, r.body)
        seen[r.json()["name"]] += 1
    return seen


# ------------------------------------------------------------------ round-robin


def test_weighted_round_robin(node: Node, backends: list[Backend]) -> None:
    """Weights 100/300 split 40 requests exactly 10/30; weight 0 gets none; a PATCH re-splits."""
    a, b, c = backends
    name, path = balanced_api(node, [(a.target, 100), (b.target, 300), (c.target, 0)])
    first = http("GET", node.proxy + path + "/x?q=1")
    assert first.status == 200
    assert first.json()["host"] == name  # Host stays the upstream's name
    assert first.json()["path"] == "/x?q=1"
    seen = served_by(node, path, 39)
    seen[first.json()["name"]] += 1
    assert seen == {"b0": 10, "b1": 30}

    admin(node, "PATCH", f"/upstreams/{name}/targets/{b.target}", {"weight": 100})
    admin(node, "PATCH", f"/upstreams/{name}/targets/{c.target}", {"weight": 200})
    assert served_by(node, path, 40) == {"b0": 10, "b1": 10, "b2": 20}


def test_no_peer_is_503(node: Node, backends: list[Backend]) -> None:
    """An upstream whose only target weighs 0 answers Kong 1.x's 503 JSON."""
    _, path = balanced_api(node, [(backends[0].target, 0)])
    r = http("GET", node.proxy + path)
    assert r.status == 503
    assert r.json() == {"message": "failure to get a peer from the ring-balancer"}


def test_connect_failure_is_retried_on_another_target(node: Node, backends: list[Backend]) -> None:
    """One target's server is down (refused): every request still succeeds on the other."""
    dead = free_port()
    _, path = balanced_api(node, [(f"127.0.0.1:{dead}", 100), (backends[0].target, 100)])
    assert served_by(node, path, 20) == {"b0": 20}


def test_api_without_upstream_unchanged(node: Node, backends: list[Backend]) -> None:
    """An upstream_url host that names no upstream is proxied directly, as before."""
    path = f"/plain{free_port()}"
    node.add_api(request_path=path, upstream_url=f"http://{backends[2].target}")
    r = http("GET", node.proxy + path)
    assert r.status == 200 and r.json()["name"] == "b2"
    assert r.json()["host"] == backends[2].target


def test_https_upstream_keeps_the_name_for_sni_and_host(node: Node, upstream: Upstream) -> None:
    """An https upstream_url naming an upstream: TLS to the pick, SNI and Host the name."""
    name = f"tls{free_port()}.test"
    admin(node, "POST", "/upstreams", {"name": name})
    admin(
        node,
        "POST",
        f"/upstreams/{name}/targets",
        {"target": f"127.0.0.1:{upstream.ports['https']}"},
    )
    path = f"/{name.split('.')[0]}"
    node.add_api(request_path=path, upstream_url=f"https://{name}", strip_request_path=True)
    r = http("GET", node.proxy + path + "/echo")
    assert r.status == 200, r.body
    body = r.json()
    assert body["sni"] == name
    # SPEC §3.2's Host, Kong 0.9's ":443" quirk included: the upstream's name, not the pick
    assert [v for k, v in body["headers"] if k.lower() == "host"] == [f"{name}:443"]


def test_websocket_through_an_upstream(node: Node, upstream: Upstream) -> None:
    """An Upgrade to a balanced API is tunnelled to the pick; frames flow both ways."""
    _, path = balanced_api(node, [(f"127.0.0.1:{upstream.ws_port}", 100)])
    with connect(f"ws://127.0.0.1:{node.ports['proxy']}{path}/", open_timeout=10) as ws:
        for i in range(5):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"m{i}"


# ------------------------------------------------------------------ least connections


def test_least_connections_avoids_the_busy_target(node: Node) -> None:
    """While one target holds requests, new requests go to the idle one."""
    slow, idle = Backend("slow"), Backend("idle")
    slow.hold.set()
    try:
        _, path = balanced_api(
            node, [(slow.target, 100), (idle.target, 100)], algorithm="least-connections"
        )
        pending: list[threading.Thread] = []
        results: list[int] = []

        def fire() -> None:
            results.append(http("GET", node.proxy + path, timeout=20).status)

        deadline = time.monotonic() + 10
        while slow.held < 1 and time.monotonic() < deadline:
            t = threading.Thread(target=fire, daemon=True)
            t.start()
            pending.append(t)
            time.sleep(0.2)
        assert slow.held == 1
        assert served_by(node, path, 10) == {"idle": 10}
        slow.release.set()
        for t in pending:
            t.join(20)
        assert results and set(results) == {200}
    finally:
        slow.close()
        idle.close()


# ------------------------------------------------------------------ consistent hashing


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[list[Node]]:
    """Two nodes on one sqlite file, trusting X-Forwarded-For (so the client IP can vary)."""
    shared = tempfile.mkdtemp(prefix="kongtx-e2e-lb-")
    env = {"KONG_SQLITE_PATH": os.path.join(shared, "kong.db"), "KONG_TRUSTED_IPS": "0.0.0.0/0"}
    try:
        with running_nodes(2, env) as nodes:
            yield nodes
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def hashed(nodes: list[Node], path: str, header: str, values: list[str]) -> list[dict[str, str]]:
    """Per node: value -> the one backend that served it 20 times (asserts stickiness)."""
    maps = []
    for n in nodes:
        mapping: dict[str, str] = {}
        for value in values:
            seen = served_by(n, path, 20, {header: value})
            assert len(seen) == 1, (value, seen)
            mapping[value] = next(iter(seen))
        maps.append(mapping)
    return maps


def test_consistent_hashing_by_header_on_two_nodes(
    two_nodes: list[Node], backends: list[Backend]
) -> None:
    """A header value sticks to one target, values spread, and both nodes agree."""
    first = two_nodes[0]
    _, path = balanced_api(
        first,
        [(backends[0].target, 100), (backends[1].target, 100)],
        hash_on="header",
        hash_on_header="X-Session",
    )
    values = [f"session-{i}" for i in range(12)]
    on_a, on_b = hashed(two_nodes, path, "X-Session", values)
    assert on_a == on_b
    assert set(on_a.values()) == {"b0", "b1"}


def test_consistent_hashing_by_ip_on_two_nodes(
    two_nodes: list[Node], backends: list[Backend]
) -> None:
    """hash_on=ip: each client address sticks to one target, the same on both nodes."""
    _, path = balanced_api(
        two_nodes[0], [(backends[0].target, 100), (backends[1].target, 100)], hash_on="ip"
    )
    values = [f"192.0.2.{i}" for i in range(1, 13)]
    on_a, on_b = hashed(two_nodes, path, "X-Forwarded-For", values)
    assert on_a == on_b
    assert set(on_a.values()) == {"b0", "b1"}


# ------------------------------------------------------------------ DNS


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dns_node(backends: list[Backend]) -> Iterator[tuple[Node, list[Backend]]]:
    """A node whose dns_resolver is a twisted.names server with A and SRV records."""
    a, b, _ = backends
    zone = {
        "ttl": 30,
        "A": {"web.lb.test": ["127.0.0.1"], "a.lb.test": ["127.0.0.1"]},
        "SRV": {"svc.lb.test": [[1, 1, a.port, "a.lb.test"], [1, 3, b.port, "a.lb.test"]]},
    }
    port = free_udp_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(__file__), "dns_zone_server.py"),
            str(port),
            json.dumps(zone),
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        with running_node(
            {"KONG_DNSMASQ": "off", "KONG_DNS_RESOLVER": f"127.0.0.1:{port}"}
        ) as started:
            yield started, backends
    finally:
        server.kill()
        server.wait(5)


def test_dns_a_records(dns_node: tuple[Node, list[Backend]]) -> None:
    """A target named by a hostname (A record) reaches its server on the target's port."""
    node, (a, _, _) = dns_node
    _, path = balanced_api(node, [(f"web.lb.test:{a.port}", 100)])
    assert served_by(node, path, 5) == {"b0": 5}


def test_dns_srv_ports_and_weights(dns_node: tuple[Node, list[Backend]]) -> None:
    """SRV records give each address its port and weight: 1:3 over 40 requests is 10/30."""
    node, _ = dns_node
    _, path = balanced_api(node, [("svc.lb.test:1", 100)])
    assert served_by(node, path, 40) == {"b0": 10, "b1": 30}
