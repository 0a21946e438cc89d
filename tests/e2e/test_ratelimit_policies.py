"""rate-limiting and response-ratelimiting through real nodes (SPEC §4.4).

Every policy is exercised on a real node: ``local``, ``cluster`` (the node's
sqlite file; two nodes sharing it for the accuracy test) and ``redis`` (a real
redis-server from tests/servers/redis.py, stopped to test fault tolerance).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from proxy_support import Node, Upstream, http, running_nodes

from tests.servers import redis as redis_server

PERIODS = ("second", "minute", "hour", "day", "month", "year")


def uniq() -> str:
    return f"rl-{uuid.uuid4().hex[:10]}.test"


def get(node: Node, host: str, path: str = "/", **headers: str) -> Any:
    return http("GET", node.proxy + path, headers={"Host": host, **headers})


# ------------------------------------------------------------------ rate-limiting


def test_local_policy_headers_and_429(kong_node: Node, upstream: Upstream) -> None:
    """local: Limit/Remaining headers per configured period count down; over the limit is 429."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(
        api, "rate-limiting", {"minute": 3, "hour": 100, "policy": "local", "limit_by": "ip"}
    )
    results = [get(kong_node, host) for _ in range(4)]
    assert [r.status for r in results] == [200, 200, 200, 429]
    assert [r.header("X-RateLimit-Remaining-minute") for r in results] == ["2", "1", "0", "0"]
    assert [r.header("X-RateLimit-Remaining-hour") for r in results] == ["99", "98", "97", "97"]
    assert {r.header("X-RateLimit-Limit-minute") for r in results} == {"3"}
    assert {r.header("X-RateLimit-Limit-hour") for r in results} == {"100"}
    assert results[0].header("X-RateLimit-Limit-second") is None
    assert results[3].json() == {"message": "API rate limit exceeded"}
    assert results[3].header("Content-Type") == "application/json; charset=utf-8"


def test_cluster_policy_on_the_datastore(kong_node: Node, upstream: Upstream) -> None:
    """cluster (the default policy): counters in the datastore give the same headers and 429."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(api, "rate-limiting", {"hour": 2, "limit_by": "ip"})
    statuses = []
    for _ in range(3):
        statuses.append(get(kong_node, host).status)
        time.sleep(0.1)  # the increment is asynchronous: let it land
    assert statuses == [200, 200, 429]


def test_limit_by_ignores_spoofed_forwarded_for(kong_node: Node, upstream: Upstream) -> None:
    """limit_by ip uses the peer address: X-Forwarded-For from an untrusted peer changes nothing."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(api, "rate-limiting", {"minute": 1, "policy": "local", "limit_by": "ip"})
    assert get(kong_node, host, **{"X-Forwarded-For": "1.1.1.1"}).status == 200
    assert get(kong_node, host, **{"X-Forwarded-For": "2.2.2.2"}).status == 429


def test_limit_by_consumer_with_key_auth(kong_node: Node, upstream: Upstream) -> None:
    """limit_by consumer: each consumer identified by key-auth has its own quota."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(api, "key-auth")
    kong_node.add_plugin(api, "rate-limiting", {"minute": 1, "policy": "local"})
    for name in ("alice", "bob"):
        consumer = kong_node.admin_call("POST", "/consumers", {"username": name + uniq()})
        kong_node.admin_call("POST", f"/consumers/{consumer['id']}/key-auth", {"key": name + host})
    assert get(kong_node, host, apikey="alice" + host).status == 200
    assert get(kong_node, host, apikey="bob" + host).status == 200
    assert get(kong_node, host, apikey="alice" + host).status == 429


# ------------------------------------------------------------------ response-ratelimiting


class CostUpstream(BaseHTTPRequestHandler):
    """Answers with the cost given in the ?cost= query as X-Kong-Limit, and echoes headers."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        cost = unquote(self.path.partition("cost=")[2])
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        if cost:
            self.send_header("X-Kong-Limit", cost)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def cost_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CostUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_response_ratelimiting(kong_node: Node, cost_upstream: str) -> None:
    """The upstream's X-Kong-Limit is spent, hidden, reported per period; a spent limit is a bodyless 429."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=cost_upstream)
    kong_node.add_plugin(
        api,
        "response-ratelimiting",
        {"limits.videos.minute": 3, "limits.videos.hour": 10, "policy": "local", "limit_by": "ip"},
    )
    r = get(kong_node, host, "/?cost=videos=2")
    assert r.status == 200
    assert r.json()["x-ratelimit-remaining-videos"] == "3"
    assert r.header("X-Kong-Limit") is None
    assert r.header("X-RateLimit-Limit-videos-minute") == "3"
    assert r.header("X-RateLimit-Remaining-videos-minute") == "1"
    assert r.header("X-RateLimit-Limit-videos-hour") == "10"
    assert r.header("X-RateLimit-Remaining-videos-hour") == "8"
    time.sleep(0.2)  # the log phase counts after the response
    r = get(kong_node, host, "/?cost=videos=1")
    assert r.json()["x-ratelimit-remaining-videos"] == "1"
    assert r.header("X-RateLimit-Remaining-videos-minute") == "0"
    time.sleep(0.2)
    r = get(kong_node, host, "/?cost=videos=1")
    assert r.status == 429
    assert r.body == b""
    r = get(kong_node, host, "/")  # costs nothing: still served
    assert r.status == 200


def test_response_ratelimiting_block_on_first_violation(
    kong_node: Node, cost_upstream: str
) -> None:
    """block_on_first_violation refuses in access with the limit's name once it is spent."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=cost_upstream)
    kong_node.add_plugin(
        api,
        "response-ratelimiting",
        {"limits.videos.minute": 1, "policy": "local", "block_on_first_violation": True},
    )
    assert get(kong_node, host, "/?cost=videos=1").status == 200
    time.sleep(0.2)
    r = get(kong_node, host, "/")
    assert r.status == 429
    assert r.json() == {"message": "API rate limit exceeded for 'videos'"}


# ------------------------------------------------------------------ redis


@pytest.fixture
def redis() -> Iterator[redis_server.RedisServer]:
    server = redis_server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_redis_policy_keys_and_fault_tolerance(
    kong_node: Node, upstream: Upstream, redis: redis_server.RedisServer
) -> None:
    """redis: counters under Kong's keys with expiries; Redis down: fault_tolerant proxies bare, else 500."""
    host = uniq()
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    common = {"policy": "redis", "redis_host": "127.0.0.1", "redis_port": redis.port}
    kong_node.add_plugin(api, "rate-limiting", {"minute": 2, "limit_by": "ip", **common})
    first = get(kong_node, host)
    assert first.status == 200 and first.header("X-RateLimit-Remaining-minute") == "1"
    time.sleep(0.2)
    assert get(kong_node, host).status == 200
    time.sleep(0.2)
    assert get(kong_node, host).status == 429
    reply = redis.command("KEYS", f"ratelimit:{api['id']}:*").decode()
    keys = [k for k in reply.split("\r\n") if k.startswith("ratelimit:")]
    # one key per period and window (the requests may straddle a second)
    assert {k.rsplit(":", 1)[1] for k in keys} == set(PERIODS), keys
    day_key = next(k for k in keys if k.endswith(":day"))
    assert redis.command("GET", day_key) == b"$1\r\n2\r\n"
    ttl = int(redis.command("TTL", day_key)[1:].strip())
    assert 86000 < ttl <= 86400

    redis.stop()
    r = get(kong_node, host)
    assert r.status == 200
    assert r.header("X-RateLimit-Limit-minute") is None

    strict = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
    kong_node.add_plugin(strict, "rate-limiting", {"minute": 5, "fault_tolerant": False, **common})
    r = get(kong_node, strict["request_host"])
    assert r.status == 500
    assert r.json() == {"message": "An unexpected error occurred"}

    redis.start()
    r = get(kong_node, strict["request_host"])
    assert r.status == 200 and r.header("X-RateLimit-Remaining-minute") == "4"


# ------------------------------------------------------------------ two nodes


def _hammer(nodes: list[Node], host: str, total: int, workers: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def work() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            status = get(nodes[i % len(nodes)], host).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[list[Node]]:
    """Two nodes sharing one sqlite file (the cluster policy's datastore)."""
    shared = tempfile.mkdtemp(prefix="kongtx-e2e-shared-")
    try:
        with running_nodes(2, {"KONG_SQLITE_PATH": os.path.join(shared, "kong.db")}) as nodes:
            yield nodes
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def two_pg_nodes() -> Iterator[list[Node]]:
    """Two nodes on one PostgreSQL database (tests/servers/postgres.py)."""
    from tests.servers import postgres

    srv = postgres.fresh_database(postgres.server(), f"kong_rl_{uuid.uuid4().hex[:8]}")
    env = {
        "KONG_DATABASE": "postgres",
        "KONG_PG_HOST": srv.host,
        "KONG_PG_PORT": str(srv.port),
        "KONG_PG_USER": srv.user,
        "KONG_PG_PASSWORD": srv.password or "",
        "KONG_PG_DATABASE": srv.database,
    }
    try:
        with running_nodes(2, env) as nodes:
            yield nodes
    finally:
        postgres.drop_database(srv)


@pytest.fixture(scope="module")
def two_cassandra_nodes() -> Iterator[list[Node]]:
    """Two nodes on one Cassandra keyspace (tests/servers/cassandra.py)."""
    from tests.servers import cassandra

    srv = cassandra.server()
    keyspace = f"kong_rl_{uuid.uuid4().hex[:8]}"
    env = {
        "KONG_DATABASE": "cassandra",
        "KONG_CASSANDRA_CONTACT_POINTS": srv.host,
        "KONG_CASSANDRA_PORT": str(srv.port),
        "KONG_CASSANDRA_KEYSPACE": keyspace,
    }
    try:
        with running_nodes(2, env) as nodes:
            yield nodes
    finally:
        cassandra.drop_keyspace(srv, keyspace)


LIMIT = 30
WORKERS = 6


def _accuracy(nodes: list[Node], upstream: Upstream, config: dict[str, Any]) -> None:
    a, b = nodes
    host = uniq()
    api = a.add_api(request_host=host, upstream_url=upstream.url)
    a.add_plugin(api, "rate-limiting", {"day": LIMIT, "limit_by": "ip", **config})
    day = time.gmtime().tm_yday
    statuses = _hammer([a, b], host, 4 * LIMIT, WORKERS)
    if time.gmtime().tm_yday != day:
        pytest.skip("the day changed during the test: the window restarted")
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert LIMIT <= ok <= LIMIT + WORKERS, (ok, statuses)
    time.sleep(0.3)  # the last increments land
    # both nodes now refuse
    assert get(a, host).status == 429
    assert get(b, host).status == 429


def test_two_nodes_accuracy_cluster_sqlite(two_nodes: list[Node], upstream: Upstream) -> None:
    """Two nodes sharing cluster counters in one sqlite file let through the limit plus at most the requests in flight."""
    _accuracy(two_nodes, upstream, {"policy": "cluster"})


def test_two_nodes_accuracy_cluster_postgres(two_pg_nodes: list[Node], upstream: Upstream) -> None:
    """Two nodes sharing cluster counters in PostgreSQL let through the limit plus at most the requests in flight."""
    _accuracy(two_pg_nodes, upstream, {"policy": "cluster"})


def test_two_nodes_accuracy_cluster_cassandra(
    two_cassandra_nodes: list[Node], upstream: Upstream
) -> None:
    """Two nodes sharing cluster counters in Cassandra let through the limit plus at most the requests in flight."""
    _accuracy(two_cassandra_nodes, upstream, {"policy": "cluster"})


def test_two_nodes_accuracy_redis(two_nodes: list[Node], upstream: Upstream) -> None:
    """Two nodes sharing counters in one Redis let through the limit plus at most the requests in flight."""
    server = redis_server.start()
    try:
        _accuracy(
            two_nodes,
            upstream,
            {"policy": "redis", "redis_host": "127.0.0.1", "redis_port": server.port},
        )
    finally:
        server.cleanup()


def test_redis_password_and_silent_server(kong_node: Node, upstream: Upstream) -> None:
    """redis_password authenticates; a wrong one, or a server that never answers, is a store error."""
    import socket

    server = redis_server.start(password="s3cret")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(10)
    try:
        common = {"minute": 5, "policy": "redis", "redis_host": "127.0.0.1", "limit_by": "ip"}
        good = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
        kong_node.add_plugin(
            good, "rate-limiting", {**common, "redis_port": server.port, "redis_password": "s3cret"}
        )
        r = get(kong_node, good["request_host"])
        assert (r.status, r.header("X-RateLimit-Remaining-minute")) == (200, "4")

        bad = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
        kong_node.add_plugin(
            bad,
            "rate-limiting",
            {
                **common,
                "redis_port": server.port,
                "redis_password": "wrong",
                "fault_tolerant": False,
            },
        )
        assert get(kong_node, bad["request_host"]).status == 500

        mute = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
        kong_node.add_plugin(
            mute,
            "rate-limiting",
            {**common, "redis_port": silent.getsockname()[1], "redis_timeout": 300},
        )
        started = time.monotonic()
        r = get(kong_node, mute["request_host"])
        assert r.status == 200 and r.header("X-RateLimit-Limit-minute") is None
        assert time.monotonic() - started < 5
    finally:
        silent.close()
        server.cleanup()
