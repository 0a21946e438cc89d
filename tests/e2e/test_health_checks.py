"""Health checks (issue 9) on one real node: active probes, manual verdicts, GET /health.

The targets are real HTTP servers on free 127.0.0.1 ports (health_backend.py,
threads of this test process) that answer their own name; each can answer 500
on the probe path, stop and start again.  Traffic goes through the node's proxy
to an API whose ``upstream_url`` names an upstream.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from health_backend import PROBE_PATH, Backend, admin, balanced_api, health, running
from proxy_support import Node, http, running_node


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """One node on sqlite; upstreams re-read every second by the active checker."""
    with running_node({"KONG_DB_UPDATE_FREQUENCY": "1"}) as started:
        yield started


@pytest.fixture
def backends() -> Iterator[tuple[Backend, ...]]:
    with running("one", "two") as pair:
        yield pair


def served_by(node: Node, path: str, count: int = 12) -> list[str]:
    """Who answered each of ``count`` proxied requests ("<status>" when not 200)."""
    names = []
    for _ in range(count):
        r = http("GET", node.proxy + path + "/", timeout=10)
        names.append(r.body.decode() if r.status == 200 else f"<{r.status}>")
    return names


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


ACTIVE = {
    "active": {
        "http_path": PROBE_PATH,
        "timeout": 1,
        "healthy": {"interval": 0.5, "successes": 2},
        "unhealthy": {"interval": 0.5, "http_failures": 2, "tcp_failures": 2, "timeouts": 2},
    }
}


def test_active_checks_take_a_failing_target_out_and_back(
    node: Node, backends: tuple[Backend, ...]
) -> None:
    """A target whose probe path answers 500 stops receiving traffic after the threshold
    and gets it back once it answers 200 again (issue 9's "Done when")."""
    one, two = backends
    upstream, path = balanced_api(node, backends, ACTIVE)
    assert wait_for(lambda: set(served_by(node, path)) == {"one", "two"}, 10)
    assert health(node, upstream) == {one.target: "HEALTHY", two.target: "HEALTHY"}
    assert wait_for(lambda: two.probes >= 2, 10), "the probes never reached the target"

    two.probe_status = 500
    assert wait_for(lambda: set(served_by(node, path)) == {"one"}, 15)
    assert set(served_by(node, path, 20)) == {"one"}
    assert health(node, upstream) == {one.target: "HEALTHY", two.target: "UNHEALTHY"}

    two.probe_status = 200
    assert wait_for(lambda: set(served_by(node, path)) == {"one", "two"}, 15)
    assert health(node, upstream)[two.target] == "HEALTHY"


def test_active_checks_take_a_stopped_target_out_and_back(
    node: Node, backends: tuple[Backend, ...]
) -> None:
    """A target whose server stops (connections refused) is taken out after tcp_failures
    and comes back when the server listens again."""
    one, two = backends
    upstream, path = balanced_api(node, backends, ACTIVE)
    assert wait_for(lambda: set(served_by(node, path)) == {"one", "two"}, 10)
    two.stop()
    # (the proxy retries a refused connect on another target, so traffic alone cannot tell)
    assert wait_for(lambda: health(node, upstream)[two.target] == "UNHEALTHY", 15)
    assert set(served_by(node, path, 20)) == {"one"}
    two.start()
    assert wait_for(lambda: set(served_by(node, path)) == {"one", "two"}, 15)


def test_manual_unhealthy_and_healthy(node: Node, backends: tuple[Backend, ...]) -> None:
    """Without checks: /health says HEALTHCHECKS_OFF; POST /unhealthy takes a target out at
    once (by target string), POST /healthy (by id, no body) brings it back."""
    one, two = backends
    upstream, path = balanced_api(node, backends)
    assert wait_for(lambda: set(served_by(node, path)) == {"one", "two"}, 10)
    assert health(node, upstream) == {
        one.target: "HEALTHCHECKS_OFF",
        two.target: "HEALTHCHECKS_OFF",
    }

    status, body = admin(node, "POST", f"/upstreams/{upstream}/targets/{two.target}/unhealthy")
    assert (status, body) == (204, None)
    assert set(served_by(node, path, 20)) == {"one"}
    assert health(node, upstream) == {one.target: "HEALTHY", two.target: "UNHEALTHY"}
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)  # kong reload keeps the verdicts
    assert wait_for(lambda: "configuration reloaded" in node.log(), 10)
    assert set(served_by(node, path, 20)) == {"one"}

    _, targets = admin(node, "GET", f"/upstreams/{upstream}/targets")
    two_id = next(t["id"] for t in targets["data"] if t["target"] == two.target)
    # Kong 1.x's documented `curl -X POST .../healthy`: no body, no Content-Type
    bare = http("POST", f"{node.admin}/upstreams/{upstream}/targets/{two_id}/healthy")
    assert bare.status == 204
    # ... while a 0.9 route keeps SPEC's 415 for a body-less POST
    assert http("POST", f"{node.admin}/consumers").status == 415
    assert set(served_by(node, path)) == {"one", "two"}
    assert health(node, upstream) == {one.target: "HEALTHY", two.target: "HEALTHY"}


def test_unknown_upstream_or_target_is_404(node: Node, backends: tuple[Backend, ...]) -> None:
    """Unknown upstream or target: 404 Not found, nothing changed."""
    upstream, _ = balanced_api(node, backends[:1])
    for method, url in (
        ("POST", "/upstreams/nope.test/targets/127.0.0.1:1/healthy"),
        ("POST", f"/upstreams/{upstream}/targets/127.0.0.1:1/unhealthy"),
        ("POST", f"/upstreams/{upstream}/targets/{uuid.uuid4()}/healthy"),
        ("GET", "/upstreams/nope.test/health"),
    ):
        assert admin(node, method, url) == (404, {"message": "Not found"}), url
    assert health(node, upstream) == {backends[0].target: "HEALTHCHECKS_OFF"}


def test_unresolvable_target_is_a_dns_error(node: Node) -> None:
    """A target whose name resolves to nothing is reported DNS_ERROR."""
    name = f"dns{uuid.uuid4().hex[:8]}.test"
    assert admin(node, "POST", "/upstreams", {"name": name})[0] == 201
    target = f"no-such-host-{uuid.uuid4().hex[:6]}.invalid:80"
    assert admin(node, "POST", f"/upstreams/{name}/targets", {"target": target})[0] == 201
    assert health(node, name) == {target: "DNS_ERROR"}
