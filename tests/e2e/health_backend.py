"""Shared by the health-check tests (tests/e2e, tests/cluster): real targets, Admin calls.

A :class:`Backend` is a threaded ``http.server`` on a free 127.0.0.1 port, in the
test process: it answers its own name; the probe path answers ``probe_status``;
a request with ``X-Fail: <its name>`` gets a 500.  It can stop (connections
refused) and start again on the same port.  ``keepalive=True`` serves HTTP/1.1
keep-alive (the node then pools its connections); every proxied request is counted,
with the client port (the node-side connection) it came on.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from proxy_support import Node, http

PROBE_PATH = "/status"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a probe hangs up after the status line: no traceback on stderr


class Backend:
    """One target server (see the module docstring)."""

    def __init__(self, name: str, keepalive: bool = False) -> None:
        self.name = name
        self.keepalive = keepalive
        self.port = 0
        self.probe_status = 200
        self.probes = 0
        #: proxied (non-probe) requests served, and the client ports they came from
        self.requests = 0
        self.ports: set[int] = set()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if backend.keepalive else "HTTP/1.0"
            disable_nagle_algorithm = backend.keepalive

            def do_GET(self) -> None:
                if self.path == PROBE_PATH:
                    backend.probes += 1
                    status = backend.probe_status
                else:
                    with backend.lock:
                        backend.requests += 1
                        backend.ports.add(self.client_address[1])
                    status = 500 if self.headers.get("X-Fail") == backend.name else 200
                body = backend.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def running(*names: str) -> Iterator[tuple[Backend, ...]]:
    """Backends with these names, stopped afterwards."""
    started = tuple(Backend(name) for name in names)
    try:
        yield started
    finally:
        for b in started:
            b.stop()


def admin(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of an Admin call; a POST without a body sends ``{}`` (this
    Admin API answers 415 to a POST without a Content-Type, as Kong 0.9)."""
    if method == "GET":
        data, headers = None, {}
    else:
        data = json.dumps(body if body is not None else {}).encode()
        headers = {"Content-Type": "application/json"}
    result = http(method, node.admin + path, data, headers, timeout=10)
    return result.status, (result.json() if result.body else None)


def health(node: Node, upstream: str) -> dict[str, str]:
    """target -> health from the node's ``GET /upstreams/{upstream}/health``."""
    status, body = admin(node, "GET", f"/upstreams/{upstream}/health")
    assert status == 200, body
    assert body["total"] == len(body["data"]) and body["node_id"]
    return {row["target"]: row["health"] for row in body["data"]}


def balanced_api(
    node: Node, backends: tuple[Backend, ...], healthchecks: dict[str, Any] | None = None
) -> tuple[str, str]:
    """An upstream over ``backends`` and an API proxying to it; (upstream name, api path)."""
    name = f"hc{uuid.uuid4().hex[:8]}.test"
    fields: dict[str, Any] = {"name": name}
    if healthchecks is not None:
        fields["healthchecks"] = healthchecks
    status, body = admin(node, "POST", "/upstreams", fields)
    assert status == 201, body
    for b in backends:
        status, body = admin(node, "POST", f"/upstreams/{name}/targets", {"target": b.target})
        assert status == 201, body
    path = "/" + name.split(".")[0]
    node.add_api(
        name=name.split(".")[0],
        request_path=path,
        strip_request_path=True,
        upstream_url=f"http://{name}",
    )
    return name, path
