"""DB-less mode through a real node: ``database = off`` + ``declarative_config`` (docs/dbless.md).

The node starts from a YAML file and proxies with its plugins and credentials;
entity writes are 405; ``POST /config`` swaps the whole configuration while
traffic flows, and no request ever sees half of one; a bad file stops the node
with one line per error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from proxy_support import Node, Upstream, http, running_node


def document(upstream: Upstream, path: str = "/a", key: str = "alice-key") -> dict[str, Any]:
    """A configuration: one key-auth API (upstream path ``path``) and one consumer."""
    return {
        "_format_version": "1.1",
        "apis": [
            {
                "name": "echo",
                "request_host": "echo.dbless.test",
                "upstream_url": upstream.url + path,
                "plugins": [{"name": "key-auth"}],
            },
            {"name": "open", "request_path": "/open", "upstream_url": upstream.url},
        ],
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": key}]}],
    }


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="kongtx-e2e-dbless-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def dbless(upstream: Upstream, files: str) -> Iterator[Node]:
    """One DB-less node started from a YAML file."""
    path = os.path.join(files, "kong.yml")
    with open(path, "w") as f:
        yaml.safe_dump(document(upstream), f)
    with running_node({"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": path}) as node:
        yield node


def proxy(node: Node, key: str | None = "alice-key", host: str = "echo.dbless.test") -> Any:
    headers = {"Host": host}
    if key is not None:
        headers["apikey"] = key
    return http("GET", node.proxy + "/x", headers=headers)


def post_config(node: Node, doc: dict[str, Any]) -> Any:
    return http(
        "POST",
        node.admin + "/config",
        json.dumps(doc).encode(),
        {"Content-Type": "application/json"},
    )


def test_starts_from_file_and_proxies(dbless: Node) -> None:
    """The file's API, plugin and credential are live: 401 without the key, 200 with it."""
    assert proxy(dbless, key=None).status == 401
    ok = proxy(dbless)
    assert ok.status == 200
    assert ok.json()["uri"] == "/a/x"
    assert proxy(dbless, key="wrong").status == 403
    apis = http("GET", dbless.admin + "/apis").json()
    assert sorted(a["name"] for a in apis["data"]) == ["echo", "open"]
    root = http("GET", dbless.admin + "/").json()
    assert root["configuration"]["database"] == "off"


def test_entity_writes_are_405(dbless: Node) -> None:
    """Every entity write is refused with 405 and a message pointing at /config."""
    for method, path in (("POST", "/apis"), ("DELETE", "/apis/echo"), ("POST", "/consumers")):
        r = http(method, dbless.admin + path, b"{}", {"Content-Type": "application/json"})
        assert r.status == 405, (method, path, r.body)
        assert r.json() == {
            "message": f"cannot {method} {path} in DB-less mode (database = off): "
            "POST /config replaces the whole configuration"
        }
    assert http("GET", dbless.admin + "/apis/echo").status == 200


def test_post_config_replaces_and_invalid_changes_nothing(dbless: Node, upstream: Upstream) -> None:
    """A valid POST /config takes effect on the next request; an invalid one is 400, no change."""
    r = post_config(dbless, document(upstream, "/b", "new-key"))
    assert r.status == 201, r.body
    assert proxy(dbless, key="alice-key").status == 403
    ok = proxy(dbless, key="new-key")
    assert ok.status == 200 and ok.json()["uri"] == "/b/x"
    bad = document(upstream, "/c", "other")
    bad["apis"][1]["request_path"] = "no-slash"
    r = post_config(dbless, bad)
    assert r.status == 400
    assert r.json()["errors"] == ["apis[1].request_path: must be prefixed with slash: 'no-slash'"]
    assert proxy(dbless, key="new-key").json()["uri"] == "/b/x"
    # YAML bodies, and ids that stay the same when the same document is posted again
    text = yaml.safe_dump(document(upstream)).encode()
    first = http("POST", dbless.admin + "/config", text, {"Content-Type": "text/yaml"})
    again = http("POST", dbless.admin + "/config", text, {"Content-Type": "text/yaml"})
    assert first.status == again.status == 201
    assert first.json()["apis"] == again.json()["apis"]  # ids and created_at kept
    assert http("GET", dbless.admin + "/config").json()["apis"] == first.json()["apis"]
    assert proxy(dbless).json()["uri"] == "/a/x"


def test_replacement_is_atomic_under_traffic(dbless: Node, upstream: Upstream) -> None:
    """While configurations alternate, every request with the key is answered by one whole one."""
    configs = [document(upstream, "/one"), document(upstream, "/two")]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            r = proxy(dbless)
            seen.append((r.status, r.json().get("uri", "") if r.status == 200 else ""))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        for i in range(20):
            assert post_config(dbless, configs[i % 2]).status == 201
    finally:
        stop.set()
        worker.join(30)
    assert seen, "no request was made"
    assert {status for status, _ in seen} == {200}, seen
    # the configuration in force when the traffic started, then the two alternating ones
    assert {uri for _, uri in seen} <= {"/a/x", "/one/x", "/two/x"}
    post_config(dbless, document(upstream))


def test_bad_file_stops_the_node(upstream: Upstream, files: str) -> None:
    """A file with mistakes: the node exits non-zero, one log line per error."""
    doc = document(upstream)
    doc["apis"][0]["upstream_url"] = "ftp://x"
    doc["consumers"].append({"custom_id": ""})
    path = os.path.join(files, "bad.yml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    with pytest.raises(RuntimeError) as e:  # start_node removes the failed node's directory
        with running_node({"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": path}):
            pass
    message = str(e.value)
    assert "node exited with 1" in message
    assert f"{path}: apis[0].upstream_url: Supported protocols are HTTP and HTTPS" in message
    assert (
        f"{path}: consumers[1].username: At least a 'custom_id' or a 'username' must be specified"
        in message
    )
