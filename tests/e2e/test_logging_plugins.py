"""The logging plugins through a real node, into real local receivers (SPEC §4.6).

Receivers: a UDP socket (udp-log, loggly, statsd, datadog), a TCP server (tcp-log),
an HTTP server (http-log, galileo, runscope), a file (file-log) and a unix datagram
socket standing in for /dev/log (syslog, through ``KONGTX_SYSLOG_SOCKET``).  Every
field of the basic serializer is checked; rejected requests are logged too (our
difference from Kong 0.9), and dead or silent receivers never delay the client.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import socketserver
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from proxy_support import Node, Upstream, free_port, http, running_node

# ------------------------------------------------------------------ receivers


class UdpReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def receive(self, count: int = 1) -> list[bytes]:
        return [self.sock.recvfrom(65536)[0] for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


class TcpReceiver:
    def __init__(self) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.connections = 0
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                for line in self.rfile:
                    outer.lines.put(line)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpReceiver:
    def __init__(self, status: int = 200) -> None:
        self.requests: queue.Queue[tuple[str, str, dict[str, str], bytes]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.put((self.command, self.path, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_PATCH = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self) -> tuple[str, str, dict[str, str], bytes]:
        return self.requests.get(timeout=10)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def syslog_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="kongtx-syslog-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def node(syslog_dir: str) -> Iterator[Node]:
    """A node whose syslog plugin writes to a socket in syslog_dir."""
    with running_node({"KONGTX_SYSLOG_SOCKET": os.path.join(syslog_dir, "log.sock")}) as n:
        yield n


@pytest.fixture
def udp() -> Iterator[UdpReceiver]:
    r = UdpReceiver()
    try:
        yield r
    finally:
        r.close()


def uniq() -> str:
    return f"log-{uuid.uuid4().hex[:10]}.test"


def api_with(node: Node, upstream: Upstream, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    api = node.add_api(request_host=uniq(), upstream_url=upstream.url)
    node.add_plugin(api, plugin, config)
    return api


def call(node: Node, api: dict[str, Any], path: str = "/logged?x=1&flag", **headers: str) -> Any:
    return http("GET", node.proxy + path, headers={"Host": api["request_host"], **headers})


def check_basic(
    msg: dict[str, Any],
    node: Node,
    api: dict[str, Any],
    status: int = 200,
    uri: str = "/logged?x=1&flag",
) -> None:
    """Every field of the basic serializer for a GET of ``uri`` on ``api``."""
    port = node.ports["proxy"]
    assert set(msg) >= {"request", "response", "latencies", "api", "client_ip", "started_at"}
    req = msg["request"]
    assert req["uri"] == uri
    assert req["request_uri"] == f"http://{api['request_host']}:{port}{uri}"
    assert req["method"] == "GET"
    if uri == "/logged?x=1&flag":
        assert req["querystring"] == {"x": "1", "flag": True}
    assert req["headers"]["host"] == api["request_host"]
    assert "user-agent" in req["headers"]
    assert isinstance(req["size"], int) and req["size"] >= len(f"GET {uri} HTTP/1.1\r\n")
    resp = msg["response"]
    assert resp["status"] == status
    assert resp["headers"]["server" if status != 200 else "via"].startswith(("kong/0.9.9", "echo"))
    assert isinstance(resp["size"], int) and resp["size"] > 0
    lat = msg["latencies"]
    assert set(lat) == {"kong", "proxy", "request"}
    assert all(isinstance(v, int) for v in lat.values())
    assert lat["request"] >= 0 and lat["kong"] >= 0
    if status == 200:
        assert lat["proxy"] >= 0
    else:
        assert lat["proxy"] == -1
    assert msg["api"] == api
    assert msg["client_ip"] == "127.0.0.1"
    assert abs(msg["started_at"] / 1000 - time.time()) < 30


# ------------------------------------------------------------------ udp / tcp / http / file


def test_udp_log(node: Node, upstream: Upstream, udp: UdpReceiver) -> None:
    """udp-log sends one datagram with every basic serializer field."""
    api = api_with(node, upstream, "udp-log", {"host": "127.0.0.1", "port": udp.port})
    assert call(node, api).status == 200
    (data,) = udp.receive()
    check_basic(json.loads(data), node, api)


def test_rejected_requests_are_logged_with_the_consumer(
    node: Node, upstream: Upstream, udp: UdpReceiver
) -> None:
    """A 401 from key-auth is logged (status 401, proxy -1); an authenticated call names its credential."""
    api = api_with(node, upstream, "udp-log", {"host": "127.0.0.1", "port": udp.port})
    node.add_plugin(api, "key-auth")
    r = call(node, api)
    assert r.status == 401
    (data,) = udp.receive()
    check_basic(json.loads(data), node, api, status=401)
    consumer = node.admin_call("POST", "/consumers", {"username": "u" + uniq()})
    cred = node.admin_call("POST", f"/consumers/{consumer['id']}/key-auth", {"key": "k" + uniq()})
    assert call(node, api, apikey=cred["key"]).status == 200
    (data,) = udp.receive()
    msg = json.loads(data)
    assert msg["authenticated_entity"] == {"id": cred["id"], "consumer_id": consumer["id"]}


def test_tcp_log_pooled(node: Node, upstream: Upstream) -> None:
    """tcp-log writes JSON + CRLF per request, reusing one connection."""
    receiver = TcpReceiver()
    try:
        api = api_with(node, upstream, "tcp-log", {"host": "127.0.0.1", "port": receiver.port})
        for _ in range(3):
            assert call(node, api).status == 200
        lines = [receiver.lines.get(timeout=10) for _ in range(3)]
        for line in lines:
            assert line.endswith(b"\r\n")
            check_basic(json.loads(line), node, api)
        assert receiver.connections == 1
    finally:
        receiver.close()


def test_http_log(node: Node, upstream: Upstream) -> None:
    """http-log sends Kong's hand-written request with the basic JSON to the endpoint's path."""
    receiver = HttpReceiver()
    try:
        endpoint = f"http://127.0.0.1:{receiver.port}/bin/logs?k=v"
        api = api_with(node, upstream, "http-log", {"http_endpoint": endpoint, "method": "PUT"})
        assert call(node, api).status == 200
        method, path, headers, body = receiver.get()
        assert (method, path) == ("PUT", "/bin/logs?k=v")
        assert headers["Host"] == "127.0.0.1"
        assert headers["Connection"] == "Keep-Alive"
        assert headers["Content-Type"] == "application/json"
        assert int(headers["Content-Length"]) == len(body)
        check_basic(json.loads(body), node, api)
    finally:
        receiver.close()


def test_file_log(node: Node, upstream: Upstream) -> None:
    """file-log appends one JSON line per request."""
    d = tempfile.mkdtemp(prefix="kongtx-filelog-")
    try:
        path = os.path.join(d, "requests.log")
        api = api_with(node, upstream, "file-log", {"path": path})
        assert call(node, api).status == 200
        assert call(node, api).status == 200
        deadline = time.monotonic() + 10
        lines: list[bytes] = []
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
            if len(lines) >= 2:
                break
            time.sleep(0.05)
        assert len(lines) == 2
        for line in lines:
            check_basic(json.loads(line), node, api)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_file_log_bad_path_refused(node: Node, upstream: Upstream) -> None:
    """A file path that cannot be created is refused by the Admin API with SPEC's message."""
    api = node.add_api(request_host=uniq(), upstream_url=upstream.url)
    r = http(
        "POST",
        f"{node.admin}/apis/{api['id']}/plugins",
        json.dumps({"name": "file-log", "config.path": "/nonexistent/dir/x.log"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert r.status == 400
    assert r.json() == {
        "config.path": "Cannot create file. Make sure the path is valid, and has the right permissions"
    }


# ------------------------------------------------------------------ syslog / loggly


def test_syslog(node: Node, upstream: Upstream, syslog_dir: str) -> None:
    """syslog sends <PRI>... kong: <json> to the local syslog socket, by status class and level."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(syslog_dir, "log.sock"))
    sock.settimeout(5)
    try:
        api = api_with(
            node,
            upstream,
            "syslog",
            {"log_level": "warning", "successful_severity": "info",
             "client_errors_severity": "warning", "server_errors_severity": "crit"},
        )  # fmt: skip
        assert call(node, api).status == 200  # info is below warning: not sent
        assert call(node, api, "/status/404").status == 404
        data = sock.recv(65536)
        head, _, body = data.partition(b" kong: ")
        assert head.startswith(b"<12>")  # USER (8) + warning (4)
        msg = json.loads(body)
        assert msg["response"]["status"] == 404
        assert msg["request"]["uri"] == "/status/404"
    finally:
        sock.close()
        os.unlink(os.path.join(syslog_dir, "log.sock"))


def test_loggly(node: Node, upstream: Upstream, udp: UdpReceiver) -> None:
    """loggly sends an RFC 5424 line with the key, tags and the basic JSON to its host:port."""
    api = api_with(
        node,
        upstream,
        "loggly",
        {"host": "127.0.0.1", "port": udp.port, "key": "SECRET", "tags": "kong,e2e"},
    )
    assert call(node, api).status == 200
    (data,) = udp.receive()
    head, _, body = data.partition(b"] ")
    parts = head.split(b" ")
    assert parts[0] == b"<14>1"
    assert parts[1].endswith(b"Z") and parts[1][:2] == b"20"
    assert parts[2] == socket.gethostname().encode()
    assert parts[3:6] == [b"kong", b"-", b"-"]
    assert b" ".join(parts[6:]) == b'[SECRET@41058 tag="kong" tag="e2e"'
    check_basic(json.loads(body), node, api)


# ------------------------------------------------------------------ statsd / datadog


def test_statsd(node: Node, upstream: Upstream, udp: UdpReceiver) -> None:
    """statsd sends every default metric for an anonymous request (per-user ones need a consumer)."""
    api = api_with(node, upstream, "statsd", {"host": "127.0.0.1", "port": udp.port})
    assert call(node, api).status == 200
    lines = sorted(d.decode() for d in udp.receive(6))
    name = api["name"].replace(".", "_")
    kinds = {
        line.split(":")[0].removeprefix(f"kong.{name}."): line.rsplit("|", 1)[1] for line in lines
    }
    assert kinds == {
        "request.count": "c",
        "latency": "g",
        "request.size": "g",
        "request.status.200": "c",
        "response.size": "g",
        "upstream_latency": "g",
    }
    assert f"kong.{name}.request.count:1|c" in lines


def test_datadog_tags(node: Node, upstream: Upstream, udp: UdpReceiver) -> None:
    """datadog appends |#tags to the metrics that have them."""
    api = api_with(
        node,
        upstream,
        "datadog",
        {"host": "127.0.0.1", "port": udp.port, "metrics": "request_count,status_count",
         "tags.request_count": "env:test,team:api"},
    )  # fmt: skip
    assert call(node, api).status == 200
    lines = sorted(d.decode() for d in udp.receive(2))
    name = api["name"].replace(".", "_")
    assert lines == [
        f"kong.{name}.request.count:1|c|#env:test,team:api",
        f"kong.{name}.request.status.200:1|c",
    ]


# ------------------------------------------------------------------ galileo / runscope


def test_galileo(node: Node, upstream: Upstream) -> None:
    """galileo POSTs an ALF 1.1.0 to /1.1.0/single on the configured collector."""
    receiver = HttpReceiver()
    try:
        api = api_with(
            node,
            upstream,
            "galileo",
            {"service_token": "TOKEN", "environment": "e2e", "host": "127.0.0.1",
             "port": receiver.port, "https": False, "queue_size": 2, "flush_timeout": 1},
        )  # fmt: skip
        assert call(node, api).status == 200
        assert call(node, api).status == 200
        method, path, headers, body = receiver.get()
        assert (method, path) == ("POST", "/1.1.0/single")
        alf = json.loads(body)
        assert alf["serviceToken"] == "TOKEN" and alf["environment"] == "e2e"
        entries = alf["har"]["log"]["entries"]
        assert len(entries) == 2
        assert entries[0]["request"]["url"].endswith("/logged?x=1&flag")
        assert entries[0]["response"]["status"] == 200
        assert entries[0]["clientIPAddress"] == "127.0.0.1"
    finally:
        receiver.close()


def test_runscope(node: Node, upstream: Upstream) -> None:
    """runscope POSTs to <api_endpoint>/buckets/<key>/messages with the bearer token."""
    receiver = HttpReceiver()
    try:
        api = api_with(
            node,
            upstream,
            "runscope",
            {"api_endpoint": f"http://127.0.0.1:{receiver.port}", "bucket_key": "bkt",
             "access_token": "tok", "log_body": True},
        )  # fmt: skip
        r = http("POST", node.proxy + "/p", b"a=1", {"Host": api["request_host"],
                 "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status == 200
        method, path, headers, body = receiver.get()
        assert (method, path) == ("POST", "/buckets/bkt/messages")
        assert headers["Authorization"] == "Bearer tok"
        msg = json.loads(body)
        assert msg["request"]["method"] == "POST"
        assert msg["request"]["body"] == "a=1"
        assert msg["request"]["form"] == {"a": "1"}
        assert msg["response"]["status"] == 200
        assert json.loads(msg["response"]["body"])["method"] == "POST"
    finally:
        receiver.close()


# ------------------------------------------------------------------ dead receivers


def test_dead_and_silent_receivers_never_delay_the_client(node: Node, upstream: Upstream) -> None:
    """With tcp-log to a closed port and http-log to a server that never answers, responses stay fast."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    try:
        api = api_with(node, upstream, "tcp-log", {"host": "127.0.0.1", "port": free_port()})
        node.add_plugin(
            api,
            "http-log",
            {"http_endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}/", "timeout": 60000},
        )
        started = time.monotonic()
        for _ in range(20):
            assert call(node, api).status == 200
        assert time.monotonic() - started < 10
    finally:
        silent.close()


def test_datadog_tag_without_value_refused(node: Node, upstream: Upstream) -> None:
    """A datadog tag without a value is refused by the Admin API, naming the tag."""
    api = node.add_api(request_host=uniq(), upstream_url=upstream.url)
    r = http(
        "POST",
        f"{node.admin}/apis/{api['id']}/plugins",
        json.dumps({"name": "datadog", "config.tags.latency": "env:"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert (r.status, r.json()) == (400, {"config.tags.latency": "key 'env:' has no value"})
