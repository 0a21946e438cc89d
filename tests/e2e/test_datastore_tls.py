"""A node on PostgreSQL over verified TLS (pg_ssl, pg_ssl_verify, lua_ssl_trusted_certificate).

The server is tests/servers/postgres.py's ``tls_server()`` (its own private PostgreSQL
with ``ssl = on``, a certificate for 127.0.0.1/localhost from a throwaway CA).  A node
given that CA starts, serves the Admin API and talks to the database only over TLS; given
another CA, or none, it refuses to start with a line that says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.support import pg_env
from tests.e2e.proxy_support import Node, http, running_node
from tests.servers import postgres as pg
from tests.servers.certs import TestCA


@pytest.fixture
def database() -> Iterator[pg.PostgresServer]:
    db = pg.fresh_database(pg.tls_server(), "ktls_e2e_" + uuid.uuid4().hex[:8])
    try:
        yield db
    finally:
        pg.drop_database(db)


def _tls_env(db: pg.PostgresServer, ca_file: str | None) -> dict[str, str]:
    env = dict(pg_env(db), KONG_PG_SSL="on", KONG_PG_SSL_VERIFY="on")
    if ca_file is not None:
        env["KONG_LUA_SSL_TRUSTED_CERTIFICATE"] = ca_file
    return env


@pytest.fixture
def node(database: pg.PostgresServer) -> Iterator[Node]:
    """A node on the TLS database, verifying it against the CA that signed its certificate."""
    assert database.ca_file is not None
    with running_node(_tls_env(database, database.ca_file)) as n:
        yield n


def _refused_start(node: Node, env: dict[str, str]) -> str:
    """Start ``node`` again with ``env``: it must exit; returns its log."""
    node.stop()
    node.env = {k: v for k, v in node.env.items() if not k.startswith("KONG_PG_SSL")}
    node.env.pop("KONG_LUA_SSL_TRUSTED_CERTIFICATE", None)
    node.env.update(env)
    with pytest.raises(RuntimeError, match="node exited with 1") as caught:
        node.start()
    return str(caught.value)


def test_a_node_verifying_the_servers_certificate_serves_over_tls(
    node: Node, database: pg.PostgresServer
) -> None:
    """The Admin API works, and every connection of the node's to the database is TLS."""
    api = node.add_api(name="tls", request_host="tls.test", upstream_url="http://127.0.0.1:9")
    got = http("GET", node.admin + "/apis/tls")
    assert got.status == 200 and got.json()["id"] == api["id"]
    sessions = database.psql(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a"
        " JOIN pg_stat_ssl s USING (pid)"
        f" WHERE a.datname = '{database.database}' AND a.application_name LIKE 'kongtx %'"
    )
    total, encrypted = (int(n) for n in sessions.split("|"))
    assert total >= 1 and encrypted == total


def test_a_certificate_from_another_ca_stops_the_start(
    node: Node, database: pg.PostgresServer, tmp_path: Any
) -> None:
    """Another CA file: the node exits, naming PostgreSQL and the failed verification,
    in one line (no traceback)."""
    other = TestCA(str(tmp_path), "another CA")
    log = _refused_start(node, _tls_env(database, other.file))
    assert "could not start kongtx: cannot connect to PostgreSQL" in log
    assert "certificate verify failed" in log
    assert "Traceback" not in log


def test_verification_without_a_ca_file_stops_the_start(
    node: Node, database: pg.PostgresServer
) -> None:
    """pg_ssl_verify without lua_ssl_trusted_certificate: one line saying so, no traceback."""
    log = _refused_start(node, _tls_env(database, None))
    assert (
        "could not start kongtx: pg_ssl_verify is on but lua_ssl_trusted_certificate is not set"
        in log
    )
    assert "Traceback" not in log


def test_tls_without_verification_needs_no_ca_file(node: Node, database: pg.PostgresServer) -> None:
    """pg_ssl alone: the node starts and serves with no CA file at all."""
    node.stop()
    node.env = {k: v for k, v in node.env.items() if k != "KONG_LUA_SSL_TRUSTED_CERTIFICATE"}
    node.env["KONG_PG_SSL_VERIFY"] = "off"
    node.start()
    assert http("GET", node.admin + "/apis").status == 200
