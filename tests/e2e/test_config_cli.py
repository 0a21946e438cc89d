"""``kong config parse / db_import / db_export`` with the real CLI and real nodes (docs/dbless.md).

A kong.yml (upstreams and targets too) is imported into one datastore, exported, imported into a second one
and exported again: both exports are the same text.  A node on the imported
datastore and a DB-less node on the exported file both authenticate the file's
consumers (key-auth and basic-auth: the stored password hash survives the trip).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from proxy_support import Node, Upstream, http, kongtx_env, running_node

COMMAND_TIMEOUT = 120


class Workspace:
    """A temporary directory with two sqlite configurations, ``a.conf`` and ``b.conf``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.env = kongtx_env({k: v for k, v in os.environ.items() if not k.startswith("KONG_")})
        for name in ("a", "b", "off"):
            database = "off" if name == "off" else "sqlite"
            with open(self.path(f"{name}.conf"), "w") as f:
                f.write(f"prefix = {self.path(name)}\ndatabase = {database}\n")

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def db(self, name: str) -> str:
        return os.path.join(self.path(name), "kong.db")

    def kong(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kongtx.cli", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(self, *argv: str) -> str:
        result = self.kong(*argv)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        return result.stdout


def document(upstream_url: str) -> dict[str, Any]:
    """Two APIs (key-auth, basic-auth), one consumer with credentials, one global plugin,
    one upstream with two targets (issue 9)."""
    return {
        "_format_version": "1.1",
        "apis": [
            {
                "name": "keyed",
                "request_host": "keyed.cli.test",
                "upstream_url": upstream_url,
                "plugins": [{"name": "key-auth"}],
            },
            {
                "name": "basic",
                "request_host": "basic.cli.test",
                "upstream_url": upstream_url,
                "plugins": [{"name": "basic-auth"}],
            },
        ],
        "consumers": [
            {
                "username": "alice",
                "keyauth_credentials": [{"key": "alice-key"}],
                "basicauth_credentials": [{"username": "alice", "password": "wonderland"}],
                "acls": [{"group": "admins"}],
            }
        ],
        "plugins": [{"name": "correlation-id"}],
        "upstreams": [
            {
                "name": "backend.cli.test",
                "healthchecks": {"active": {"healthy": {"interval": 5}}},
                "targets": [{"target": "127.0.0.1:9001", "weight": 20}, {"target": "b.cli.test"}],
            }
        ],
    }


@pytest.fixture(scope="module")
def work(upstream: Upstream) -> Iterator[Workspace]:
    root = tempfile.mkdtemp(prefix="kongtx-e2e-config-")
    try:
        ws = Workspace(root)
        with open(ws.path("kong.yml"), "w") as f:
            yaml.safe_dump(document(upstream.url), f)
        yield ws
    finally:
        shutil.rmtree(root, ignore_errors=True)


def authenticated(node: Node) -> None:
    """The file's consumer gets through key-auth and basic-auth; strangers do not."""
    keyed = {"Host": "keyed.cli.test"}
    assert http("GET", node.proxy + "/", headers=keyed).status == 401
    assert http("GET", node.proxy + "/", headers={**keyed, "apikey": "alice-key"}).status == 200
    good = base64.b64encode(b"alice:wonderland").decode()
    bad = base64.b64encode(b"alice:nope").decode()
    basic = {"Host": "basic.cli.test"}
    assert (
        http("GET", node.proxy + "/", headers={**basic, "Authorization": f"Basic {good}"}).status
        == 200
    )
    assert (
        http("GET", node.proxy + "/", headers={**basic, "Authorization": f"Basic {bad}"}).status
        == 403
    )


def test_parse(work: Workspace) -> None:
    """``config parse`` says what a valid file holds and lists every error of a bad one."""
    out = work.ok("config", "parse", "kong.yml")
    assert "parse successful: 2 apis, 1 consumers" in out
    bad = document("http://127.0.0.1:9")
    bad["apis"][0]["request_host"] = "a b"
    bad["consumers"][0]["acls"] = [{"group": "admins"}, {"group": "admins"}]
    with open(work.path("bad.yml"), "w") as f:
        yaml.safe_dump(bad, f)
    result = work.kong("config", "parse", "bad.yml")
    assert result.returncode == 1
    assert "apis[0].request_host: Invalid value: a b" in result.stderr
    assert "consumers[0].acls[1].group: ACL group already exist for this consumer" in result.stderr
    assert "Error: config parse: 2 error(s) in bad.yml" in result.stderr


def test_round_trip(work: Workspace) -> None:
    """import -> export -> import elsewhere -> export gives the same text; twice is harmless."""
    out = work.ok("config", "db_import", "kong.yml", "-c", "a.conf")
    assert "import successful" in out
    work.ok("config", "db_import", "kong.yml", "-c", "a.conf")
    work.ok("config", "db_export", "a.yml", "-c", "a.conf")
    stdout = work.ok("config", "db_export", "-c", "a.conf")
    with open(work.path("a.yml")) as f:
        exported = f.read()
    assert stdout == exported
    doc = yaml.safe_load(exported)
    assert [a["name"] for a in doc["apis"]] == ["basic", "keyed"]
    assert doc["consumers"][0]["basicauth_credentials"][0]["password"].startswith("scrypt$")
    (upstream,) = doc["upstreams"]
    assert upstream["healthchecks"]["active"]["healthy"] == {
        "interval": 5,
        "http_statuses": [200, 302],
        "successes": 0,
    }
    assert [(t["target"], t["weight"]) for t in upstream["targets"]] == [
        ("127.0.0.1:9001", 20),
        ("b.cli.test:8000", 100),
    ]
    work.ok("config", "db_import", "a.yml", "-c", "b.conf")
    work.ok("config", "db_export", "b.json", "-c", "b.conf")
    work.ok("config", "db_export", "b.yml", "-c", "b.conf")
    with open(work.path("b.yml")) as f:
        assert f.read() == exported
    with open(work.path("b.json")) as f:
        assert yaml.safe_load(f.read()) == doc


def test_invalid_import_writes_nothing(work: Workspace) -> None:
    """A bad file is refused whole: the datastore stays empty."""
    with open(work.path("broken.yml"), "w") as f:
        yaml.safe_dump({"_format_version": "1.1", "apis": [{"name": "x"}]}, f)
    result = work.kong("config", "db_import", "broken.yml", "-c", "off.conf")
    assert result.returncode == 1 and "needs a datastore" in result.stderr
    os.makedirs(work.path("c"), exist_ok=True)
    with open(work.path("c.conf"), "w") as f:
        f.write(f"prefix = {work.path('c')}\n")
    result = work.kong("config", "db_import", "broken.yml", "-c", "c.conf")
    assert result.returncode == 1
    assert "apis[0].upstream_url: upstream_url is required" in result.stderr
    exported = yaml.safe_load(work.ok("config", "db_export", "-c", "c.conf"))
    assert exported == {"_format_version": "1.1"}


def test_nodes_serve_the_imported_and_exported_configuration(work: Workspace) -> None:
    """A node on the imported datastore and a DB-less node on the export both authenticate."""
    if not os.path.exists(work.path("a.yml")):
        work.ok("config", "db_import", "kong.yml", "-c", "a.conf")
        work.ok("config", "db_export", "a.yml", "-c", "a.conf")
    for env in (
        {"KONG_SQLITE_PATH": work.db("a")},
        {"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": work.path("a.yml")},
    ):
        with running_node(env) as node:
            authenticated(node)
            served = http("GET", node.admin + "/config").json()
            with open(work.path("a.yml")) as f:
                assert served == yaml.safe_load(f.read())
