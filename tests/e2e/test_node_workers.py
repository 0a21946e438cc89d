"""A node whose proxy is served by worker processes (``nginx_worker_processes = 2``).

Real ``twistd -n kong`` nodes, real echo upstreams.  Which process answered a
request is read from the correlation-id plugin's ``tracker`` id (it carries the
serving process's pid), which the echo upstream sends back; the workers are the
node's child processes.  Every request is made on a fresh connection, so the
kernel hands them to either worker.  ``kong quit`` with workers (a request in
flight in a worker finishes, every worker exits) is one of the cases of
test_reload_under_load's quit test.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from typing import Any

import pytest
from proxy_support import (
    HTTPResult,
    KeepAliveLoad,
    Node,
    Upstream,
    children,
    free_port,
    http,
    running_node,
    start_upstream,
)

WORKERS = {"KONG_NGINX_WORKER_PROCESSES": "2"}
#: correlation-id's config that names the answering process in each response (X-Tracker)
TRACKER = {"generator": "tracker", "header_name": "X-Tracker", "echo_downstream": True}


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """A node with two proxy workers and status_listen on."""
    status = free_port()
    with running_node({**WORKERS, "KONG_STATUS_LISTEN": f"127.0.0.1:{status}"}) as n:
        n.ports["status"] = status
        yield n


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s: {what}")


def wait_for_workers(node: Node, count: int = 2, timeout: float = 30.0) -> set[int]:
    found: set[int] = set()

    def enough() -> bool:
        found.clear()
        found.update(children(node.pid))
        return len(found) == count

    wait_until(enough, timeout, f"{count} workers of {node.pid}")
    return found


def tracked_api(node: Node, upstream: Upstream, **fields: Any) -> tuple[dict[str, Any], str]:
    """A new API whose requests carry the serving process's pid (correlation-id tracker)."""
    path = "/w-" + uuid.uuid4().hex[:8]
    api = node.add_api(
        request_path=path, strip_request_path=True, upstream_url=upstream.url, **fields
    )
    node.add_plugin(
        api,
        "correlation-id",
        TRACKER,
    )
    return api, path


def served_by(result: HTTPResult) -> int:
    """The pid of the process that answered a request (from the tracker id it sent back)."""
    tracker = result.header("X-Tracker")
    assert tracker is not None, (result.status, result.body)
    return int(tracker.split("-")[2])


def many(fn: Callable[[], HTTPResult], n: int, threads: int = 8) -> list[HTTPResult]:
    """``n`` requests from ``threads`` concurrent clients, each on a fresh connection."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def until_both_workers(node: Node, path: str, workers: set[int], timeout: float = 20.0) -> set[int]:
    """Requests until both workers answered one (a new worker may still be starting; bounded
    by ``timeout``); every answer must be a 200."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for result in many(lambda: http("GET", node.proxy + path + "/x"), 16):
            assert result.status == 200, (result.status, result.body)
            pids.add(served_by(result))
        if pids == workers:
            break
        time.sleep(0.1)
    return pids


def test_requests_are_served_by_two_worker_processes(node: Node, upstream: Upstream) -> None:
    """The node has two children, both answer proxied requests, the node itself answers none."""
    workers = wait_for_workers(node)
    _, path = tracked_api(node, upstream)
    wait_until(lambda: http("GET", node.proxy + path + "/x").status == 200, what="API served")
    assert until_both_workers(node, path, workers) == workers
    assert node.pid not in workers
    # TLS on proxy_listen_ssl is served by the workers too
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    result = http("GET", node.proxy_ssl + path + "/x", context=context)
    assert result.status == 200
    assert served_by(result) in workers


def test_admin_changes_reach_every_worker_at_once(node: Node, upstream: Upstream) -> None:
    """New API, plugin added, API deleted: once the first request shows a change, every
    later request (to either worker) shows it too."""
    workers = wait_for_workers(node)
    api, path = tracked_api(node, upstream)
    url = node.proxy + path + "/x"

    def all_answer(status: int) -> None:
        wait_until(lambda: http("GET", url).status == status, 5.0, f"first {status}")
        results = many(lambda: http("GET", url), 24)
        assert Counter(r.status for r in results) == {status: 24}

    all_answer(200)
    assert until_both_workers(node, path, workers) == workers
    node.add_plugin(api, "key-auth")
    all_answer(401)
    node.delete_api(api)
    all_answer(404)


def pinned_connections(node: Node, path: str, workers: set[int]) -> dict[int, HTTPConnection]:
    """A keep-alive connection to each worker (found by asking on fresh ones; bounded)."""
    pinned: dict[int, HTTPConnection] = {}
    for _ in range(100):
        conn = HTTPConnection("127.0.0.1", node.ports["proxy"], timeout=10)
        conn.request("GET", path + "/x")
        response = conn.getresponse()
        response.read()
        tracker = response.getheader("X-Tracker") or ""
        pid = int(tracker.split("-")[2])
        if pid in pinned:
            conn.close()
        else:
            pinned[pid] = conn
        if set(pinned) == workers:
            return pinned
    raise AssertionError(f"could not reach every worker: {sorted(pinned)} of {sorted(workers)}")


def test_local_rate_limit_holds_across_workers(node: Node, upstream: Upstream) -> None:
    """rate-limiting (policy local, 5 a minute) with a connection to each worker: 3 requests
    through one, then through the other 2 are 200 and the next 429, as is the first again."""
    workers = wait_for_workers(node)
    api, path = tracked_api(node, upstream)
    wait_until(lambda: http("GET", node.proxy + path + "/x").status == 200)
    first, second = pinned_connections(node, path, workers).values()
    node.add_plugin(api, "rate-limiting", {"minute": 5, "policy": "local"})

    def status(conn: HTTPConnection) -> int:
        conn.request("GET", path + "/x")
        response = conn.getresponse()
        response.read()
        return response.status

    time.sleep(0.3)  # the plugin's invalidation reaches both workers (a pipe write each)
    statuses = [status(first) for _ in range(3)] + [status(second) for _ in range(3)]
    statuses.append(status(first))
    first.close()
    second.close()
    assert statuses == [200, 200, 200, 200, 200, 429, 429]


def test_status_counts_requests_served_by_workers(node: Node, upstream: Upstream) -> None:
    """GET /status (Admin) and /metrics (status_listen) count what the workers proxied."""
    name = "counted-" + uuid.uuid4().hex[:6]
    _, path = tracked_api(node, upstream, name=name)
    wait_until(lambda: http("GET", node.proxy + path + "/x").status == 200)
    before = http("GET", node.admin + "/status").json()["server"]["total_requests"]
    for result in many(lambda: http("GET", node.proxy + path + "/x"), 20):
        assert result.status == 200
    # workers report every second; the Admin request itself counts once
    wait_until(
        lambda: (
            http("GET", node.admin + "/status").json()["server"]["total_requests"] >= before + 20
        ),
        10.0,
        "/status counting the workers' requests",
    )
    label = f'api="{name}",code="200"'

    def counted() -> int:
        url = f"http://127.0.0.1:{node.ports['status']}/metrics"
        for line in http("GET", url).body.decode().splitlines():
            if line.startswith("kong_http_requests_total") and label in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    wait_until(lambda: counted() == 21, 10.0, "/metrics counting the workers' requests")


def test_target_marked_unhealthy_is_avoided_by_every_worker(node: Node, upstream: Upstream) -> None:
    """POST .../unhealthy on the master: no worker sends to that target any more."""
    other = start_upstream()
    try:
        name = "lb-" + uuid.uuid4().hex[:8] + ".test"
        node.admin_call("POST", "/upstreams", {"name": name})
        one = f"127.0.0.1:{upstream.ports['http']}"
        two = f"127.0.0.1:{other.ports['http']}"
        for target in (one, two):
            node.admin_call("POST", f"/upstreams/{name}/targets", {"target": target})
        path = "/h-" + uuid.uuid4().hex[:8]
        node.add_api(request_path=path, strip_request_path=False, upstream_url=f"http://{name}")
        wait_until(lambda: http("GET", node.proxy + path).status == 200)
        node.admin_call("POST", f"/upstreams/{name}/targets/{two}/unhealthy", {})
        time.sleep(0.3)  # the verdict travels master -> workers over a pipe
        marker = path + "/after"
        for result in many(lambda: http("GET", node.proxy + marker), 30):
            assert result.status == 200
        seen_by_two = [uri for _, uri, _ in other.seen() if uri.startswith(marker)]
        assert seen_by_two == []
        health = node.admin_call("GET", f"/upstreams/{name}/health")
        states = {row["target"]: row["health"] for row in health["data"]}
        assert states[two] == "UNHEALTHY"
    finally:
        other.process.terminate()
        other.process.wait(10)


def test_killed_worker_is_restarted(node: Node, upstream: Upstream) -> None:
    """SIGKILL one worker: the node starts another and requests keep being answered."""
    workers = wait_for_workers(node)
    _, path = tracked_api(node, upstream)
    wait_until(lambda: http("GET", node.proxy + path + "/x").status == 200)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(now := children(node.pid)) == 2 and victim not in now, 30.0, "a replacement"
    )
    for result in many(lambda: http("GET", node.proxy + path + "/x"), 20):
        assert result.status == 200
    replaced = wait_for_workers(node)
    assert until_both_workers(node, path, replaced) == replaced
    assert http("GET", node.admin + "/").status == 200


def wait_for_log(node: Node, text: str, timeout: float = 60.0) -> None:
    try:
        wait_until(lambda: text in node.log(), timeout)
    except AssertionError:
        raise AssertionError(f"{text!r} never logged:\n{node.log()[-3000:]}") from None


def test_sighup_under_load_fails_nothing(upstream: Upstream) -> None:
    """Four keep-alive clients send without pause while SIGHUP replaces the workers twice."""
    with running_node(dict(WORKERS)) as n:
        _, path = tracked_api(n, upstream)
        wait_until(lambda: http("GET", n.proxy + path + "/x").status == 200)
        with KeepAliveLoad(n.ports["proxy"], path + "/x") as load:
            time.sleep(0.5)
            before = set(children(n.pid))
            for generation in (2, 3):
                assert n.process is not None
                n.process.send_signal(signal.SIGHUP)
                wait_for_log(n, f"proxy workers reloaded (generation {generation})")
                time.sleep(0.5)
        assert load.errors == []
        assert set(load.statuses) == {200}, load.statuses
        assert sum(load.statuses.values()) > 50
        after = wait_for_workers(n)
        assert not (after & before)  # a whole new generation


def test_dbless_config_reaches_every_worker(upstream: Upstream) -> None:
    """DB-less: POST /config on the master is applied by both workers, and a worker started
    afterwards (a killed one's replacement) serves the posted configuration, not the file."""

    def document(path: str) -> dict[str, Any]:
        return {
            "_format_version": "1.1",
            "apis": [
                {
                    "name": "echo",
                    "request_path": path,
                    "strip_request_path": True,
                    "upstream_url": upstream.url,
                    "plugins": [
                        {
                            "name": "correlation-id",
                            "config": TRACKER,
                        }
                    ],
                }
            ],
        }

    with running_node({**WORKERS, "KONG_DATABASE": "off"}) as n:
        workers = wait_for_workers(n)
        assert http("GET", n.proxy + "/posted/x").status == 404
        posted = http(
            "POST",
            n.admin + "/config",
            json.dumps(document("/posted")).encode(),
            {"Content-Type": "application/json"},
        )
        assert posted.status == 201, posted.body
        wait_until(lambda: http("GET", n.proxy + "/posted/x").status == 200)
        assert until_both_workers(n, "/posted", workers) == workers
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in children(n.pid), 30.0, "the victim gone")
        replaced = wait_for_workers(n)
        assert victim not in replaced
        wait_for_log(n, "starting another")
        time.sleep(1.0)
        assert until_both_workers(n, "/posted", replaced) == replaced


def test_passive_verdict_of_one_worker_reaches_the_others(node: Node) -> None:
    """Passive checks (one HTTP failure is unhealthy): a 500 seen by one worker takes the
    target out in the master's table (GET .../health) and in the other worker too."""
    from health_backend import balanced_api, health, running

    workers = wait_for_workers(node)
    with running("one", "two") as (one, two):
        upstream, path = balanced_api(
            node, (one, two), {"passive": {"unhealthy": {"http_failures": 1}}}
        )
        api = node.admin_call("GET", "/apis/" + path.removeprefix("/"))
        node.add_plugin(
            api,
            "correlation-id",
            TRACKER,
        )
        wait_until(lambda: http("GET", node.proxy + path + "/x").header("X-Tracker") is not None)
        first, second = pinned_connections(node, path, workers).values()

        def ask(conn: HTTPConnection, headers: dict[str, str]) -> tuple[int, bytes]:
            conn.request("GET", path + "/x", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()

        failed = [ask(first, {"X-Fail": "two"}) for _ in range(4)]  # round-robin reaches two
        assert (500, b"two") in failed, failed
        wait_until(lambda: health(node, upstream)[two.target] == "UNHEALTHY", 5.0, "verdict")
        answers = [ask(second, {}) for _ in range(6)]
        first.close()
        second.close()
        assert answers == [(200, b"one")] * 6


def test_reload_moves_the_workers_to_a_new_proxy_port(upstream: Upstream) -> None:
    """proxy_listen changed in the file + SIGHUP: the new generation serves the new port
    (bound by the master before it starts), the old port is closed once the old one left."""
    with running_node(dict(WORKERS)) as n:
        _, path = tracked_api(n, upstream)
        new_port = free_port()
        n.stop()
        n.write_conf({"proxy_listen": f"127.0.0.1:{n.ports['proxy']}"})
        n.start()  # the Admin API listens once every worker accepts (and SIGHUP is handled)
        assert n.process is not None
        old_url = n.proxy + path + "/x"
        assert _status(old_url) == 200
        n.write_conf({"proxy_listen": f"127.0.0.1:{new_port}"})
        n.process.send_signal(signal.SIGHUP)
        wait_for_log(n, "proxy workers reloaded (generation 2)")
        new_url = f"http://127.0.0.1:{new_port}{path}/x"
        workers = wait_for_workers(n)
        results = many(lambda: http("GET", new_url), 16)
        assert {r.status for r in results} == {200}
        assert {served_by(r) for r in results} <= workers
        wait_until(lambda: _status(old_url) is None, 10.0, "the first port closed")
        assert "listeners moved: proxy" in n.log()


def _status(url: str) -> int | None:
    """A request's status, None when the connection is refused."""
    try:
        return http("GET", url, timeout=5).status
    except OSError:
        return None


class Conn:
    """A keep-alive connection to the proxy (so to one worker)."""

    def __init__(self, node: Node) -> None:
        self.http = HTTPConnection("127.0.0.1", node.ports["proxy"], timeout=10)

    def call(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        self.http.request(method, path, body, headers)
        response = self.http.getresponse()
        return response.status, dict(response.getheaders()), response.read()


def test_a_workers_write_reaches_the_other_worker_and_the_master_at_once(
    upstream: Upstream,
) -> None:
    """An OAuth2 token refreshed through one worker (the plugin deletes the old token in
    that worker's DAO) is refused at once by the other worker, which had it cached, and is
    gone from the master's cache, with ``db_update_frequency`` = 60 s: the worker told its
    master, which invalidated everywhere (the periodic catch-up is far away)."""
    with running_node({**WORKERS, "KONG_DB_UPDATE_FREQUENCY": "60"}) as n:
        workers = wait_for_workers(n)
        path = "/oa-" + uuid.uuid4().hex[:8]
        api = n.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
        oauth2 = n.add_plugin(
            api,
            "oauth2",
            {"enable_password_grant": True, "accept_http_if_already_terminated": True},
        )
        n.add_plugin(api, "correlation-id", TRACKER)
        consumer = n.admin_call("POST", "/consumers", {"username": "u-" + uuid.uuid4().hex[:6]})
        app = n.admin_call(
            "POST",
            f"/consumers/{consumer['id']}/oauth2",
            {"name": "app", "redirect_uri": "http://app.test/cb"},
        )
        form = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Proto": "https"}
        client = f"client_id={app['client_id']}&client_secret={app['client_secret']}"

        def token(conn: Conn, grant: str) -> dict[str, Any]:
            status, _, body = conn.call("POST", path + "/oauth2/token", grant.encode(), **form)
            assert status == 200, (status, body)
            return dict(json.loads(body))

        first = token(
            Conn(n),
            f"grant_type=password&provision_key={oauth2['config']['provision_key']}"
            f"&authenticated_userid=someone&{client}",
        )
        old = {"Authorization": f"Bearer {first['access_token']}"}
        # a connection to each worker, each having served (so cached) the token
        pinned: dict[int, Conn] = {}
        for _ in range(100):
            conn = Conn(n)
            status, headers, body = conn.call("GET", path + "/x", **old)
            assert status == 200, (status, body)
            pid = int(headers["X-Tracker"].split("-")[2])
            if pid not in pinned:
                pinned[pid] = conn
            if set(pinned) == workers:
                break
        assert set(pinned) == workers
        one, other = pinned.values()
        assert other.call("GET", path + "/x", **old)[0] == 200  # still cached there

        started = time.monotonic()
        fresh = token(
            one, f"grant_type=refresh_token&refresh_token={first['refresh_token']}&{client}"
        )
        assert one.call("GET", path + "/x", **old)[0] == 401
        wait_until(
            lambda: other.call("GET", path + "/x", **old)[0] == 401,
            5.0,
            "the other worker refuses the refreshed-away token",
        )
        assert time.monotonic() - started < 5.0  # db_update_frequency is 60 s
        new = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert other.call("GET", path + "/x", **new)[0] == 200
        cached = http("GET", f"{n.admin}/cache/oauth2_token:{first['access_token']}")
        assert cached.status == 404, cached.body
