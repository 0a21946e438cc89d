"""``kong migrations list|up|reset -c <conf>`` on sqlite, PostgreSQL and Cassandra (SPEC §5).

Each backend gets a fresh database (or keyspace) and a configuration file naming it; the
CLI runs as an operator runs it, in its own process.  PostgreSQL and Cassandra come from
the session harnesses in ``tests/servers`` (skipped, or failed under
``KONG_TEST_REQUIRE``, exactly as those harnesses decide).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.proxy_support import kongtx_env

BACKENDS = ["sqlite", "postgres", "cassandra"]


def _conf_lines(backend: str, tmp: str) -> tuple[list[str], str, str, object]:
    """Configuration lines for a fresh store, its kind ('database'/'keyspace'), name, cleanup."""
    if backend == "sqlite":
        path = os.path.join(tmp, "kong.db")
        return ["database = sqlite", f"sqlite_path = {path}"], "database", path, None
    if backend == "postgres":
        from tests.servers.postgres import drop_database, fresh_database, server

        db = fresh_database(server(), "mig_" + uuid.uuid4().hex[:8])
        lines = [
            "database = postgres",
            f"pg_host = {db.host}",
            f"pg_port = {db.port}",
            f"pg_user = {db.user}",
            f"pg_password = {db.password or ''}",
            f"pg_database = {db.database}",
        ]
        return lines, "database", db.database, lambda: drop_database(db)
    from tests.servers.cassandra import drop_keyspace
    from tests.servers.cassandra import server as cassandra_server

    srv = cassandra_server()
    keyspace = "kt_mig_" + uuid.uuid4().hex[:8]
    lines = [
        "database = cassandra",
        f"cassandra_contact_points = {srv.host}",
        f"cassandra_port = {srv.port}",
        f"cassandra_keyspace = {keyspace}",
        "cassandra_timeout = 30000",
    ]
    return lines, "keyspace", keyspace, lambda: drop_keyspace(srv, keyspace)


class Cli:
    """Runs ``python -m kongtx.cli`` with one configuration file."""

    def __init__(self, conf: str, kind: str, name: str) -> None:
        self.conf = conf
        self.kind = kind
        self.name = name
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        self.env = kongtx_env(env)

    def run(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kongtx.cli", "migrations", *argv, "-c", self.conf],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=os.path.dirname(self.conf),
            timeout=600,
        )

    def ok(self, *argv: str, stdin: str = "") -> str:
        out = self.run(*argv, stdin=stdin)
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
        return out.stdout + out.stderr


@pytest.fixture(params=BACKENDS)
def cli(request: pytest.FixtureRequest) -> Iterator[Cli]:
    """A configuration file naming a fresh, empty store of the parametrised backend."""
    tmp = tempfile.mkdtemp(prefix="kongtx-e2e-migrations-")
    cleanup = None
    try:
        lines, kind, name, cleanup = _conf_lines(request.param, tmp)
        conf = os.path.join(tmp, "kong.conf")
        with open(conf, "w") as f:
            f.write("\n".join([f"prefix = {os.path.join(tmp, 'prefix')}", *lines]) + "\n")
        yield Cli(conf, kind, name)
    finally:
        if callable(cleanup):
            cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _executed(output: str) -> dict[str, list[str]]:
    """``<identifier>: m1, m2`` lines of ``migrations list`` as a dict."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        m = re.fullmatch(r"([\w-]+): (\S.*)", line.strip())
        if m:
            found[m.group(1)] = [n.strip() for n in m.group(2).split(",")]
    return found


def test_list_up_list_up_reset_list(cli: Cli) -> None:
    """list on an empty store, up, list (Kong's shape), up is a no-op, reset -y, list empty."""
    empty = f"No migrations have been run yet for {cli.kind} '{cli.name}'"
    assert empty in cli.ok("list")

    up = cli.ok("up")
    ran = re.findall(r"^([\w-]+) migrated up to: (\S+)$", up, re.M)
    assert ran and ran[0][0] == "core", up
    assert f"{len(ran)} migrations ran" in up

    listed = cli.ok("list")
    assert f"Executed migrations for {cli.kind} '{cli.name}':" in listed
    executed = _executed(listed)
    assert "core" in executed, listed  # identifiers in the store's order, as in Kong
    # every migration `up` reported is listed under its identifier, in the order it ran
    for identifier in {i for i, _ in ran}:
        assert executed[identifier] == [m for i, m in ran if i == identifier]

    again = cli.ok("up")
    assert "migrated up to" not in again
    assert f"{cli.kind.capitalize()} '{cli.name}' is already up to date" in again
    assert _executed(cli.ok("list")) == executed

    assert "Schema successfully reset" in cli.ok("reset", "-y")
    assert empty in cli.ok("list")


def test_reset_asks_and_honours_the_answer(cli: Cli) -> None:
    """reset without -y: 'n' cancels and keeps the schema, 'y' on stdin drops it."""
    cli.ok("up")
    before = _executed(cli.ok("list"))
    assert before

    cancelled = cli.ok("reset", stdin="n\n")
    assert "Canceled" in cancelled
    assert _executed(cli.ok("list")) == before

    assert "Schema successfully reset" in cli.ok("reset", stdin="y\n")
    assert f"No migrations have been run yet for {cli.kind} '{cli.name}'" in cli.ok("list")
