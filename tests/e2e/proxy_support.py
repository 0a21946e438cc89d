"""Helpers for end-to-end proxy tests: a real node process and a real upstream.

``kong_node`` starts ``twistd -n --pidfile= kong`` (the build ``kongtx_build`` chose:
the installed package, compiled, when it is this checkout's code, else the checkout
on ``PYTHONPATH``), a temporary ``KONG_PREFIX``, ``KONG_DATABASE=sqlite`` and free
127.0.0.1 ports for every listener (never the defaults: other things may run on
this machine), and waits for the Admin API.  ``upstream`` runs
``tests/e2e/echo_upstream.py`` (HTTP, HTTPS with SNI recording, WebSocket echo).
APIs and plugins are created through the node's Admin API, as an operator would.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import cache
from typing import Any

from kongtx import build_info

# free_port is re-exported: every test process shares the one port book
from tests.harness import free_port as free_port
from tests.harness import node_started, node_stopped

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TWISTD = "from twisted.scripts.twistd import run; run()"
START_TIMEOUT = 60.0


@cache
def kongtx_build() -> build_info.Build:
    """Which kongtx the test processes run, chosen once per session.

    The package installed in this interpreter's site-packages (``make install``:
    the hot path compiled) when its sources are this checkout's, byte for byte;
    else the checkout, pure Python, saying so once (a file edited since the last
    ``make install``).  ``KONG_TEST_BUILD=installed|checkout`` forces one.
    """
    build = build_info.installed_build(REPO, sys.executable, os.environ.get("KONG_TEST_BUILD", ""))
    if not build.installed:
        print(f"kongtx test processes run {build.reason}", file=sys.stderr)
    return build


@cache
def test_packages() -> str:
    """A directory holding only a link to the checkout's ``tests`` (``tests.fixtures``'
    custom plugins), for processes that must not import the checkout's ``kongtx``."""
    path = tempfile.mkdtemp(prefix="kongtx-test-packages-")
    os.symlink(os.path.join(REPO, "tests"), os.path.join(path, "tests"))
    atexit.register(shutil.rmtree, path, True)
    return path


def kongtx_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a kongtx process (node, CLI, workers master) of the chosen build:
    the checkout first on ``PYTHONPATH``, or not on it at all (``tests`` still
    importable).  Start such a process from a directory outside the checkout
    (``python -m``/``-c`` put the current one first on ``sys.path``)."""
    installed = kongtx_build().installed
    env = build_info.process_env(installed, REPO, env)
    path = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if installed and test_packages() not in path:
        env["PYTHONPATH"] = os.pathsep.join([*path, test_packages()])
    return env


class HTTPResult:
    """A response read with urllib (status, headers, body), errors included."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> HTTPResult:
    """One request with the standard library (no keep-alive, nothing hidden)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return HTTPResult(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return HTTPResult(e.code, e.headers, e.read())


class Node:
    """A running kongtx node process."""

    def __init__(self, prefix: str, env: dict[str, str], ports: dict[str, int]) -> None:
        self.prefix = prefix
        self.env = env
        self.ports = ports
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(os.path.dirname(prefix), "node.log")
        #: twistd kong's options (``-c kong.conf``: ``write_conf``)
        self.args: list[str] = []

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def proxy_ssl(self) -> str:
        return f"https://127.0.0.1:{self.ports['proxy_ssl']}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the node and wait until ITS Admin API answers (its prefix in ``GET /``).

        Another process answering on the admin port (a port clash) or the node exiting
        right after its first answer fails here, with the node's log, not in a test.
        """
        self.env = kongtx_env(self.env)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", "-", "kong"]
            + self.args,
            env=self.env,
            cwd=os.path.dirname(self.prefix),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        node_started(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                node_stopped(self)
                raise RuntimeError(f"node exited with {self.process.returncode}:\n{self.log()}")
            try:
                answer = http("GET", self.admin + "/", timeout=2)
            except OSError:
                answer = None
            if answer is not None and answer.status == 200:
                self._check_answer(answer)
                return
            time.sleep(0.1)
        self.stop()  # never leave a node (and its workers) running after a failed start
        raise RuntimeError(f"node did not start in {START_TIMEOUT}s:\n{self.log()}")

    def _check_answer(self, answer: HTTPResult) -> None:
        """The first 200 on the admin port came from this node, which is still running."""
        try:
            prefix = answer.json()["configuration"]["prefix"]
        except (ValueError, KeyError, TypeError):
            prefix = None
        if prefix is None or os.path.realpath(prefix) != os.path.realpath(self.prefix):
            self.stop()
            raise RuntimeError(
                f"{self.admin} answered for prefix {prefix!r}, not this node's {self.prefix}: "
                f"another process holds the port\n{self.log()}"
            )
        if self.exit_code() is not None:
            node_stopped(self)
            raise RuntimeError(
                f"node exited with {self.exit_code()} right after it answered:\n{self.log()}"
            )

    def exit_code(self) -> int | None:
        """The process's exit status, None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        node_stopped(self)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def write_conf(self, values: dict[str, str]) -> None:
        """Write ``values`` to the node's kong.conf (read at start with ``-c`` and on each
        reload); their ``KONG_*`` variables are dropped so that the file decides."""
        path = os.path.join(os.path.dirname(self.prefix), "kong.conf")
        with open(path, "w") as f:
            f.writelines(f"{key} = {value}\n" for key, value in values.items())
        self.args = ["-c", path]
        for key in values:
            self.env.pop("KONG_" + key.upper(), None)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def rss_kb(self) -> int:
        """The node process's resident set size (kB), from /proc."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    # ------------------------------------------------------------- Admin API

    def admin_call(self, method: str, path: str, fields: dict[str, Any] | None = None) -> Any:
        body = json.dumps(fields).encode() if fields is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        result = http(method, self.admin + path, body, headers)
        if result.status >= 400:
            raise AssertionError(f"{method} {path} -> {result.status} {result.body!r}")
        return result.json() if result.body else None

    def add_api(self, **fields: Any) -> dict[str, Any]:
        """Create an API through the Admin API (name derived if not given)."""
        api: dict[str, Any] = self.admin_call("POST", "/apis", fields)
        return api

    def add_plugin(
        self, api: dict[str, Any], name: str, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"name": name}
        for key, value in (config or {}).items():
            fields[f"config.{key}"] = value
        plugin: dict[str, Any] = self.admin_call("POST", f"/apis/{api['id']}/plugins", fields)
        return plugin

    def delete_api(self, api: dict[str, Any]) -> None:
        self.admin_call("DELETE", f"/apis/{api['id']}")


def new_node(directory: str, extra_env: dict[str, str] | None = None) -> Node:
    """A node (not started) with its prefix in ``directory`` and every listener on a
    port of its own; ``extra_env`` (``KONG_*``) over the defaults: sqlite, no reports,
    no worker processes."""
    prefix = os.path.join(directory, "prefix")
    ports = {
        "proxy": free_port(),
        "proxy_ssl": free_port(),
        "admin": free_port(),
        "cluster": free_port(udp_too=True),
        "cluster_rpc": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
    env.update(
        KONG_PREFIX=prefix,
        KONG_DATABASE="sqlite",
        KONG_PROXY_LISTEN=f"127.0.0.1:{ports['proxy']}",
        KONG_PROXY_LISTEN_SSL=f"127.0.0.1:{ports['proxy_ssl']}",
        KONG_ADMIN_LISTEN=f"127.0.0.1:{ports['admin']}",
        KONG_CLUSTER_LISTEN=f"127.0.0.1:{ports['cluster']}",
        KONG_CLUSTER_LISTEN_RPC=f"127.0.0.1:{ports['cluster_rpc']}",
        KONG_ANONYMOUS_REPORTS="off",
        # the node serves the proxy itself unless a test asks for worker processes
        KONG_NGINX_WORKER_PROCESSES="1",
    )
    env.update(extra_env or {})
    return Node(prefix, kongtx_env(env), ports)


def start_node(
    extra_env: dict[str, str] | None = None, conf: dict[str, str] | None = None
) -> tuple[Node, str]:
    """A node started in a new temporary directory (returned); ``conf``: its kong.conf."""
    tmp = tempfile.mkdtemp(prefix="kongtx-e2e-proxy-")
    node = new_node(tmp, extra_env)
    if conf is not None:
        node.write_conf(conf)
    try:
        node.start()
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)  # the error carries the node's log
        raise
    return node, tmp


@contextmanager
def running_node(
    extra_env: dict[str, str] | None = None, conf: dict[str, str] | None = None
) -> Iterator[Node]:
    """``start_node`` for a ``with`` block (a fixture's body): at its end the node is
    stopped and its directory removed, whatever happened."""
    node, tmp = start_node(extra_env, conf)
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def running_nodes(count: int, extra_env: dict[str, str] | None = None) -> Iterator[list[Node]]:
    """``count`` nodes of the same settings for a ``with`` block (``running_node`` each)."""
    with ExitStack() as stack:
        yield [stack.enter_context(running_node(extra_env)) for _ in range(count)]


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc): a node's proxy workers."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


class Upstream:
    """The echo upstream process and its ports."""

    def __init__(self, process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.ports['https']}"

    @property
    def ws_port(self) -> int:
        return self.ports["ws"]

    def seen(self) -> list[list[Any]]:
        """Every request the upstream received: [method, uri, body length]."""
        result: list[list[Any]] = http("GET", self.url + "/seen").json()
        return result

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = http("GET", self.url + "/stats").json()
        return result


def start_upstream() -> Upstream:
    """Start ``echo_upstream.py`` and read its ports (stop it with ``process.terminate()``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "echo_upstream.py")],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError("echo upstream did not start")
    return Upstream(process, json.loads(line))


def raw_exchange(
    port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True
) -> bytes:
    """Send exact bytes on a fresh connection and read what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


class KeepAliveLoad:
    """``clients`` threads sending ``GET path`` on keep-alive connections without pause.

    ``with KeepAliveLoad(port, path) as load:`` runs them for the block; after it,
    ``load.statuses`` counts every response's status and ``load.errors`` lists every
    failed request (a refused connection, a reset, a timeout): a reload that fails a
    request shows up in one or the other.  Bounded by the block and each thread's
    30 s join.
    """

    def __init__(self, port: int, path: str, clients: int = 4) -> None:
        import threading
        from collections import Counter

        self.port = port
        self.path = path
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        from http.client import HTTPConnection

        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] += 1
                if response.will_close:
                    conn.close()  # the next request opens a new connection
            except Exception as e:
                self.errors.append(repr(e))
                conn.close()
        conn.close()

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
