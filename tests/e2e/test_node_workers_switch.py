"""``kong reload`` changing ``nginx_worker_processes`` between 1 and 2 (SIGHUP).

Real ``twistd -n kong`` nodes reading a kong.conf that the test rewrites before
each SIGHUP, real echo upstreams, four keep-alive clients sending without pause
through each switch.  Which process answered is read from the correlation-id
tracker id (test_node_workers); the workers are the node's children.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from proxy_support import (
    KeepAliveLoad,
    Node,
    Upstream,
    children,
    free_port,
    http,
    running_node,
    start_upstream,
)
from test_node_workers import (
    TRACKER,
    many,
    served_by,
    tracked_api,
    wait_for_log,
    wait_for_workers,
    wait_until,
)


@pytest.fixture
def one() -> Iterator[Node]:
    """A node serving the proxy itself, configured by its kong.conf (proxy_listen included)."""
    port = free_port()
    with running_node(
        conf={"nginx_worker_processes": "1", "proxy_listen": f"127.0.0.1:{port}"}
    ) as n:
        n.ports["proxy"] = port
        yield n


def reload(node: Node, conf: dict[str, str], done: str) -> None:
    """Rewrite kong.conf, SIGHUP, wait for ``done`` then for the reload's end in the log."""
    reloaded = whole_log(node).count("configuration reloaded")
    node.write_conf({"proxy_listen": f"127.0.0.1:{node.ports['proxy']}", **conf})
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    wait_for_log(node, done)
    wait_until(
        lambda: whole_log(node).count("configuration reloaded") > reloaded, 60.0, "reload finished"
    )


def whole_log(node: Node) -> str:
    with open(node.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def total_requests(node: Node) -> int:
    return int(http("GET", node.admin + "/status").json()["server"]["total_requests"])


def servers(node: Node, url: str, n: int = 24) -> Counter[int]:
    """Which processes answered ``n`` requests on fresh connections (all must be 200)."""
    results = many(lambda: http("GET", url), n)
    assert {r.status for r in results} == {200}, [(r.status, r.body) for r in results]
    return Counter(served_by(r) for r in results)


def switch_under_load(node: Node, path: str, conf: dict[str, str], done: str) -> int:
    """The reload under four keep-alive clients: nothing fails; returns the requests made."""
    with KeepAliveLoad(node.ports["proxy"], path + "/x") as load:
        time.sleep(0.5)
        reload(node, conf, done)
        time.sleep(0.5)
    assert load.errors == []
    assert set(load.statuses) == {200}, load.statuses
    made = sum(load.statuses.values())
    assert made > 50
    return made


def test_one_to_two_and_back_under_load(one: Node, upstream: Upstream) -> None:
    """1 -> 2: the workers take the node's proxy socket over without a failed request,
    serve every later request and follow Admin changes; 2 -> 1: the node serves again,
    the workers are gone.  GET /status keeps counting through both."""
    api, path = tracked_api(one, upstream)
    url = one.proxy + path + "/x"
    wait_until(lambda: http("GET", url).status == 200, what="API served")
    assert set(servers(one, url)) == {one.pid}
    assert children(one.pid) == set()
    before = total_requests(one)

    made = switch_under_load(
        one, path, {"nginx_worker_processes": "2"}, "proxy served by 2 worker processes"
    )
    workers = wait_for_workers(one)
    assert set(servers(one, url)) <= workers
    assert served_over_tls(one, path) in workers
    wait_until(lambda: total_requests(one) >= before + made + 24, 10.0, "counted (1 -> 2)")
    one.add_plugin(api, "key-auth")  # an Admin change reaches the workers
    wait_until(lambda: http("GET", url).status == 401, 5.0, "key-auth applied")
    assert {r.status for r in many(lambda: http("GET", url), 24)} == {401}

    _, path = tracked_api(one, upstream)
    url = one.proxy + path + "/x"
    wait_until(lambda: http("GET", url).status == 200, what="second API served")
    middle = total_requests(one)
    made = switch_under_load(
        one, path, {"nginx_worker_processes": "1"}, "proxy served by the node process"
    )
    wait_until(lambda: children(one.pid) == set(), 30.0, "the workers gone")
    assert set(servers(one, url)) == {one.pid}
    assert served_over_tls(one, path) == one.pid
    # the workers' counts stay; the node's own count on
    assert total_requests(one) >= middle + made + 24
    assert "Traceback" not in whole_log(one)


def test_switching_again_and_again(one: Node, upstream: Upstream) -> None:
    """Three round trips 1 -> 2 -> 1 (the sockets the node adopted back are handed over
    again): every step serves, and the node's descriptors do not grow."""
    _, path = tracked_api(one, upstream)
    url = one.proxy + path + "/x"
    wait_until(lambda: http("GET", url).status == 200, what="API served")
    descriptors = []
    for _ in range(3):
        reload(one, {"nginx_worker_processes": "2"}, "proxy served by 2 worker processes")
        assert set(servers(one, url, 8)) <= wait_for_workers(one)
        reload(one, {"nginx_worker_processes": "1"}, "proxy served by the node process")
        assert set(servers(one, url, 8)) == {one.pid}
        assert served_over_tls(one, path) == one.pid
        wait_until(lambda: children(one.pid) == set(), 30.0, "the workers gone")
        descriptors.append(held_descriptors(one.pid))
    assert descriptors[2] <= descriptors[0], descriptors


def held_descriptors(pid: int) -> int:
    """The descriptors a switch could leak: everything but connected TCP sockets.

    Listening sockets, pipes (workers' control lines) and files count; connections
    (clients' keep-alive, the upstream pool's idle ones) come and go with timing.
    """
    listening = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                listening.add(fields[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            if target[len("socket:[") : -1] not in listening:
                continue
        held += 1
    return held


def test_one_to_two_with_a_new_proxy_port_and_back(one: Node, upstream: Upstream) -> None:
    """proxy_listen changed in the same reloads: the workers serve the new port (the old
    one closed), then the node serves a third one itself."""
    _, path = tracked_api(one, upstream)
    first = one.proxy + path + "/x"
    wait_until(lambda: http("GET", first).status == 200, what="API served")
    port = free_port()
    listen = f"127.0.0.1:{port}"
    reload(
        one,
        {"nginx_worker_processes": "2", "proxy_listen": listen},
        "proxy served by 2 worker processes",
    )
    workers = wait_for_workers(one)
    second = f"http://127.0.0.1:{port}{path}/x"
    assert set(servers(one, second)) <= workers
    wait_until(lambda: _refused(first), 10.0, "the first port closed")

    port = free_port()
    reload(
        one,
        {"nginx_worker_processes": "1", "proxy_listen": f"127.0.0.1:{port}"},
        "proxy served by the node process",
    )
    third = f"http://127.0.0.1:{port}{path}/x"
    assert set(servers(one, third)) == {one.pid}
    wait_until(lambda: children(one.pid) == set(), 30.0, "the workers gone")
    wait_until(lambda: _refused(second), 10.0, "the second port closed")
    assert whole_log(one).count("listeners moved: proxy") == 2
    assert "Traceback" not in whole_log(one)


def test_workers_that_cannot_start_leave_the_node_serving(one: Node, upstream: Upstream) -> None:
    """A reload to 2 whose workers die at start (a custom plugin they cannot import; the
    node loaded its plugins at start): the node keeps serving, no request fails."""
    _, path = tracked_api(one, upstream)
    url = one.proxy + path + "/x"
    wait_until(lambda: http("GET", url).status == 200, what="API served")
    switch_under_load(
        one,
        path,
        {"nginx_worker_processes": "2", "custom_plugins": "no_such_plugin_module"},
        "the node keeps serving the proxy",
    )
    assert set(servers(one, url)) == {one.pid}
    wait_until(lambda: children(one.pid) == set(), 30.0, "the failed workers gone")


def test_a_verdict_made_before_the_switch_holds_in_the_workers(
    one: Node, upstream: Upstream
) -> None:
    """A target marked unhealthy while the node served the proxy itself is avoided by the
    workers after 1 -> 2; one marked healthy again through the master reaches them too."""
    other = start_upstream()
    try:
        name = "lb-" + uuid.uuid4().hex[:8] + ".test"
        one.admin_call("POST", "/upstreams", {"name": name})
        two = f"127.0.0.1:{other.ports['http']}"
        for target in (f"127.0.0.1:{upstream.ports['http']}", two):
            one.admin_call("POST", f"/upstreams/{name}/targets", {"target": target})
        path = "/h-" + uuid.uuid4().hex[:8]
        one.add_api(request_path=path, strip_request_path=False, upstream_url=f"http://{name}")
        wait_until(lambda: http("GET", one.proxy + path).status == 200)
        one.admin_call("POST", f"/upstreams/{name}/targets/{two}/unhealthy", {})
        reload(one, {"nginx_worker_processes": "2"}, "proxy served by 2 worker processes")
        wait_for_workers(one)

        def reached_two(marker: str) -> bool:
            for result in many(lambda: http("GET", one.proxy + path + marker), 30):
                assert result.status == 200
            return any(uri.startswith(path + marker) for _, uri, _ in other.seen())

        assert not reached_two("/after-switch")
        one.admin_call("POST", f"/upstreams/{name}/targets/{two}/healthy", {})
        time.sleep(0.3)  # the verdict travels master -> workers over a pipe
        assert reached_two("/healthy-again")
    finally:
        other.process.terminate()
        other.process.wait(10)


def test_dbless_configuration_posted_before_the_switch_reaches_the_workers(
    upstream: Upstream,
) -> None:
    """DB-less, 1 -> 2: the workers serve the configuration posted to the node (not the
    start-up one), and one posted afterwards; 2 -> 1: the node serves the last one."""

    def post(path: str) -> None:
        api = {"name": "echo", "request_path": path, "strip_request_path": True}
        api.update(upstream_url=upstream.url)
        document = {
            "_format_version": "1.1",
            "apis": [{**api, "plugins": [{"name": "correlation-id", "config": TRACKER}]}],
        }
        body = json.dumps(document).encode()
        posted = http("POST", n.admin + "/config", body, {"Content-Type": "application/json"})
        assert posted.status == 201, posted.body

    with running_node({"KONG_DATABASE": "off"}, conf={"nginx_worker_processes": "1"}) as n:
        post("/first")
        assert set(servers(n, n.proxy + "/first/x")) == {n.pid}
        reload(n, {"nginx_worker_processes": "2"}, "proxy served by 2 worker processes")
        workers = wait_for_workers(n)
        assert set(servers(n, n.proxy + "/first/x")) <= workers
        post("/second")
        wait_until(lambda: http("GET", n.proxy + "/second/x").status == 200, 5.0, "posted")
        assert set(servers(n, n.proxy + "/second/x")) <= workers
        reload(n, {"nginx_worker_processes": "1"}, "proxy served by the node process")
        assert set(servers(n, n.proxy + "/second/x")) == {n.pid}
        assert http("GET", n.proxy + "/first/x").status == 404


def served_over_tls(node: Node, path: str) -> int:
    """The process that answered a request on proxy_listen_ssl."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    result = http("GET", node.proxy_ssl + path + "/x", context=context)
    assert result.status == 200, (result.status, result.body)
    return served_by(result)


def _refused(url: str) -> bool:
    try:
        http("GET", url, timeout=5)
    except OSError:
        return True
    return False
