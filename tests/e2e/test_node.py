"""A whole node process: persistence across restarts, start-up refusals, reload, quit, /status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from proxy_support import TWISTD, Node, Upstream, http, running_node


@pytest.fixture
def node() -> Iterator[Node]:
    """A fresh node on its own prefix, stopped at the end."""
    with running_node() as n:
        yield n


def run_twistd(env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", "-", "kong"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_api_survives_a_restart(node: Node) -> None:
    """An API created through the Admin API is still served after the node restarts."""
    api = node.add_api(
        name="persist", request_host="persist.test", upstream_url="http://127.0.0.1:9"
    )
    node.stop()
    node.start()
    got = http("GET", node.admin + "/apis/persist")
    assert got.status == 200
    assert got.json()["id"] == api["id"]
    assert got.json()["created_at"] == api["created_at"]
    # the restarted node's router knows it too (502: the upstream port is closed)
    proxied = http("GET", node.proxy + "/", headers={"Host": "persist.test"})
    assert proxied.status == 502


def test_bad_value_stops_the_node_with_one_line_naming_the_property(node: Node) -> None:
    """An invalid KONG_* value stops twistd before it binds, exit code non-zero, property named."""
    env = dict(node.env, KONG_MEM_CACHE_SIZE="lots")
    result = run_twistd(env, os.path.dirname(node.prefix))
    assert result.returncode != 0
    assert "mem_cache_size" in result.stdout + result.stderr


def test_plugin_in_use_but_not_enabled_refuses_to_start(node: Node) -> None:
    """A plugin present in the datastore but not loaded on this node stops start-up (SPEC §2.3)."""
    node.stop()
    env = dict(node.env, KONG_CUSTOM_PLUGINS="tests.fixtures.example_plugin")
    node.env = env
    node.start()
    assert "example-stamp" in node.admin_call("GET", "/plugins/enabled")["enabled_plugins"]
    api = node.add_api(request_host="custom.test", upstream_url="http://127.0.0.1:9")
    node.add_plugin(api, "example-stamp", {"value": "v1"})
    node.stop()
    env = dict(env)
    del env["KONG_CUSTOM_PLUGINS"]
    result = run_twistd(env, os.path.dirname(node.prefix))
    assert result.returncode != 0
    assert "example-stamp plugin is in use but not enabled" in result.stdout + result.stderr


def test_sighup_reload_rebinds_a_changed_admin_port(node: Node) -> None:
    """SIGHUP re-reads the configuration: a new admin_listen is bound, the proxy keeps serving."""
    from proxy_support import free_port

    new_port = free_port()
    # KONG_* variables win over the file, so move the admin address into the file
    node.stop()
    node.write_conf({"admin_listen": f"127.0.0.1:{node.ports['admin']}"})
    node.start()
    node.write_conf({"admin_listen": f"127.0.0.1:{new_port}", "log_level": "debug"})
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    wait_for(lambda: ok(f"http://127.0.0.1:{new_port}/"))
    wait_for(lambda: not ok(node.admin + "/"))
    # a broken file is refused and the node keeps running on what it had
    node.write_conf({"admin_listen": "nonsense"})
    node.process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert ok(f"http://127.0.0.1:{new_port}/")
    assert "reload refused" in node.log()
    node.ports["admin"] = new_port


def test_reload_moves_only_what_changed(node: Node, upstream: Upstream) -> None:
    """A reload that moves admin_listen and adds status_listen keeps the proxy listening on
    its unchanged port (before: every listener was rebuilt, the proxy's bind failed on its
    own port and the proxy was gone); trusted_ips applies in place, without a new socket."""
    from proxy_support import free_port

    node.stop()
    node.write_conf({"admin_listen": f"127.0.0.1:{node.ports['admin']}"})
    node.start()
    node.add_api(request_host="reload.test", upstream_url=upstream.url)

    def real_ip() -> str | None:
        r = http(
            "GET",
            node.proxy + "/",
            headers={"Host": "reload.test", "X-Forwarded-For": "203.0.113.9"},
        )
        assert r.status == 200, r.body
        seen = {k.lower(): v for k, v in json.loads(r.body)["headers"]}
        return seen.get("x-real-ip")

    assert real_ip() == "127.0.0.1"  # trusted_ips empty: the peer is the client
    new_admin, status_port = free_port(), free_port()
    node.write_conf(
        {
            "admin_listen": f"127.0.0.1:{new_admin}",
            "status_listen": f"127.0.0.1:{status_port}",
            "trusted_ips": "127.0.0.1",
        }
    )
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    wait_for(lambda: ok(f"http://127.0.0.1:{new_admin}/"))
    node.ports["admin"] = new_admin
    wait_for(lambda: ok(f"http://127.0.0.1:{status_port}/metrics"))
    assert "listeners moved: admin, status" in node.log()
    assert real_ip() == "203.0.113.9"  # same proxy socket, new trusted_ips
    # and back: status closed, the proxy still there
    node.write_conf({"admin_listen": f"127.0.0.1:{new_admin}"})
    node.process.send_signal(signal.SIGHUP)
    wait_for(lambda: not ok(f"http://127.0.0.1:{status_port}/metrics"))
    assert real_ip() == "127.0.0.1"


def test_sigquit_drains_and_exits_zero(node: Node) -> None:
    """SIGQUIT (kong quit) stops listening and exits cleanly."""
    assert node.process is not None
    node.process.send_signal(signal.SIGQUIT)
    assert node.process.wait(20) == 0
    assert not ok(node.admin + "/")


def test_status_counts_connections_and_rows(node: Node) -> None:
    """GET /status reports server counters and one row count per collection."""
    node.add_api(request_host="status.test", upstream_url="http://127.0.0.1:9")
    http("GET", node.proxy + "/", headers={"Host": "status.test"})
    status = http("GET", node.admin + "/status").json()
    assert status["database"]["apis"] == 1
    assert status["database"]["consumers"] == 0
    assert status["server"]["total_requests"] >= 3
    assert status["server"]["connections_accepted"] >= 3
    assert set(status["server"]) == {
        "connections_active",
        "connections_reading",
        "connections_writing",
        "connections_waiting",
        "connections_accepted",
        "connections_handled",
        "total_requests",
    }
    json.dumps(status)


def ok(url: str) -> bool:
    try:
        return http("GET", url, timeout=2).status == 200
    except OSError:
        return False


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
