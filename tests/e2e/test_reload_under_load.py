"""Worker processes on real sockets: reloads under load fail no request; a killed worker is replaced.

A node (its datastore and Admin API) holds the API; a proxy master
(``python -m kongtx.workers master``) with two workers serves it on its own
port while four keep-alive clients send requests without pause, and the master
is reloaded (SIGHUP) three times: every request must be answered 200, and no
request may fail on a connection the old workers let go.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from proxy_support import (
    KeepAliveLoad,
    Node,
    Upstream,
    children,
    free_port,
    running_node,
)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """One node for the datastore and Admin API (its own proxy is not used here)."""
    with running_node({}) as n:
        yield n


def wait_for(path: str, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            if text in f.read():
                return
        time.sleep(0.05)
    with open(path, errors="replace") as f:
        raise AssertionError(f"{text!r} never logged:\n{f.read()[-4000:]}")


def start_master(
    node: Node, upstream: Upstream, name: str
) -> tuple[str, int, str, subprocess.Popen[bytes]]:
    """A 2-worker master on a free port serving a new API of ``node``'s datastore:
    ``(api path, proxy port, master log, master process)``."""
    path = f"/{name}-" + uuid.uuid4().hex[:8]
    node.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
    port = free_port()
    env = dict(node.env)
    env.update(KONG_PROXY_LISTEN=f"127.0.0.1:{port}", KONG_NGINX_WORKER_PROCESSES="2")
    log_path = os.path.join(os.path.dirname(node.prefix), f"master-{name}.log")
    with open(log_path, "wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "kongtx.workers", "master"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=os.path.dirname(node.prefix),
        )
    return path, port, log_path, master


def test_three_reloads_under_load_fail_nothing(node: Node, upstream: Upstream) -> None:
    """Four clients keep sending while the workers are replaced three times: 0 errors, only 200s."""
    path, port, log_path, master = start_master(node, upstream, "reload")
    try:
        assert master.stdout is not None
        line = master.stdout.readline()  # the master says when its workers accept
        assert json.loads(line) == {"op": "ready", "workers": 2}, open(log_path).read()

        with KeepAliveLoad(port, path + "/x") as load:
            time.sleep(1.0)
            for generation in (2, 3, 4):
                master.send_signal(signal.SIGHUP)
                wait_for(log_path, f"workers reloaded (generation {generation})")
                time.sleep(1.5)  # the old generation drains meanwhile
        assert load.errors == []
        assert set(load.statuses) == {200}, load.statuses
        assert sum(load.statuses.values()) > 100
        master.send_signal(signal.SIGQUIT)
        assert master.wait(60) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(10)


def test_killed_worker_is_replaced(node: Node, upstream: Upstream) -> None:
    """SIGKILL one of two workers: the master starts another and the proxy keeps answering."""
    path, port, log_path, master = start_master(node, upstream, "restart")
    try:
        assert master.stdout is not None
        assert json.loads(master.stdout.readline())["op"] == "ready"
        before = children(master.pid)
        assert len(before) == 2
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = children(master.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(open(log_path).read()[-3000:])
        wait_for(log_path, "starting another")
        time.sleep(2.0)  # the replacement connects to its datastore and adopts the socket
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path + "/x")
            assert conn.getresponse().status == 200
            conn.close()
        master.send_signal(signal.SIGTERM)
        master.wait(60)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(10)


@pytest.mark.parametrize(("frontend", "workers"), [("fast", "1"), ("web", "1"), ("fast", "2")])
def test_quit_drains_in_flight_proxy_requests(
    upstream: Upstream, frontend: str, workers: str
) -> None:
    """``kong quit`` (SIGQUIT) lets a proxied request in flight finish before the node exits
    (in the node, or in one of its proxy workers, which all exit too)."""

    with running_node(
        {"KONG_PROXY_FRONTEND": frontend, "KONG_NGINX_WORKER_PROCESSES": workers}
    ) as n:
        path = "/quit-" + uuid.uuid4().hex[:8]
        n.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
        result: list[object] = []

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", n.ports["proxy"], timeout=30)
            try:
                conn.request("GET", path + "/stall?seconds=2")
                response = conn.getresponse()
                result.append((response.status, response.read()))
            except Exception as e:
                result.append(e)

        expected = 0 if workers == "1" else int(workers)  # 1: the node serves, no child
        deadline = time.monotonic() + 30
        while len(children(n.pid)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        spawned = children(n.pid)
        assert len(spawned) == expected
        client = threading.Thread(target=slow)
        client.start()
        time.sleep(0.7)  # the request is with the upstream now
        assert n.process is not None
        n.process.send_signal(signal.SIGQUIT)
        client.join(30)
        assert len(result) == 1 and isinstance(result[0], tuple), result
        assert result[0][0] == 200
        assert n.process.wait(30) == 0
        assert not [pid for pid in spawned if os.path.exists(f"/proc/{pid}")]  # workers left first
