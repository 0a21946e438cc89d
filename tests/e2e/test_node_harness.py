"""The node harness itself: ports never handed out twice, a node that is not ours
refused at start, a dead node's log kept and shown (tests/harness.py, proxy_support)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from proxy_support import free_port, new_node, running_node

from tests import harness


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Hundreds of calls in one process give hundreds of distinct ports; a UDP one binds UDP."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    udp = free_port(udp_too=True)
    assert udp not in ports
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp))


@pytest.fixture
def impostor() -> Iterator[int]:
    """A port answering every ``GET /`` 200 like a node of another prefix."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"configuration": {"prefix": "/elsewhere/prefix"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_start_refuses_an_admin_port_answered_by_another_process(impostor: int) -> None:
    """A 200 on the admin port from a process that is not the node fails the start, loudly."""
    tmp = tempfile.mkdtemp(prefix="kongtx-e2e-harness-")
    try:
        node = new_node(tmp, {"KONG_ADMIN_LISTEN": f"127.0.0.1:{impostor}"})
        node.ports["admin"] = impostor
        with pytest.raises(RuntimeError, match="another process holds the port"):
            node.start()
        assert node.exit_code() is not None  # stopped, not left running
        assert node not in harness.running_nodes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_dead_nodes_log_is_kept_and_reported(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that died before it was stopped is reported as such, its log tail and a kept copy."""
    monkeypatch.setenv("KONG_TEST_LOG_DIR", str(tmp_path))
    with running_node() as node:
        os.kill(node.pid, signal.SIGKILL)
        assert node.process is not None
        node.process.wait(10)
        sections = [s for s in harness.failure_sections("t::dead") if node.admin in s[0]]
        assert len(sections) == 1
        title, text = sections[0]
        assert "EXITED with -9 before it was stopped" in title
        assert "started on sqlite" in text
        kept = title.split("logs kept in ", 1)[1].rstrip(")")
        with open(os.path.join(kept, "node.log")) as f:
            assert "started on sqlite" in f.read()
    assert node not in harness.running_nodes()
