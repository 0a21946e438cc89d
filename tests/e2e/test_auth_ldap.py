"""ldap-auth through a real node against a real OpenLDAP (slapd from tests/servers/slapd.py).

Skipped loudly when slapd is not installed, failed instead when KONG_TEST_REQUIRE
contains ``ldap``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from proxy_support import Node, Upstream, free_port, http

from tests.servers import slapd


@pytest.fixture(scope="module")
def directory() -> Iterator[slapd.SlapdServer]:
    yield slapd.server()


def ldap(user: str, password: str) -> str:
    return "ldap " + base64.b64encode(f"{user}:{password}".encode()).decode()


def api(node: Node, upstream: Upstream, server: slapd.SlapdServer | None, **config: Any) -> str:
    host = f"l{uuid.uuid4().hex[:10]}.ldap.test"
    row = node.add_api(request_host=host, upstream_url=upstream.url)
    base = {
        "ldap_host": "127.0.0.1",
        "ldap_port": server.port if server else free_port(),
        "base_dn": slapd.PEOPLE_DN,
        "attribute": "uid",
        "timeout": 3000,
    }
    node.add_plugin(row, "ldap-auth", {**base, **config})
    return host


def get(node: Node, host: str, **headers: str) -> Any:
    return http("GET", node.proxy + "/", headers={"Host": host, **headers})


def test_ldap_auth(kong_node: Node, upstream: Upstream, directory: slapd.SlapdServer) -> None:
    """401 + LDAP realm without a header, 403 on a bad password, X-Credential-Username on a bind."""
    host = api(kong_node, upstream, directory, hide_credentials=True)
    r = get(kong_node, host)
    assert (r.status, r.json()) == (401, {"message": "Unauthorized"})
    assert r.header("WWW-Authenticate") == 'LDAP realm="kong"'

    r = get(kong_node, host, Authorization=ldap("einstein", "wrong"))
    assert (r.status, r.json()) == (403, {"message": "Invalid authentication credentials"})
    r = get(kong_node, host, Authorization=ldap("nobody", "password"))
    assert r.status == 403
    r = get(kong_node, host, Authorization=ldap("einstein,ou=people", "password"))
    assert r.status == 403

    for user in ("einstein", "curie", "tesla"):
        r = get(kong_node, host, Authorization=ldap(user, slapd.USERS[user]))
        assert r.status == 200, (user, r.body)
        seen = {n.lower(): v for n, v in r.json()["headers"]}
        assert seen["x-credential-username"] == user
        assert "authorization" not in seen and "x-consumer-id" not in seen

    r = get(kong_node, host, **{"Proxy-Authorization": ldap("einstein", "password")})
    assert r.status == 200


def test_start_tls(kong_node: Node, upstream: Upstream, directory: slapd.SlapdServer) -> None:
    """start_tls upgrades the connection before the bind (slapd logs the TLS session)."""
    host = api(kong_node, upstream, directory, start_tls=True, cache_ttl=0)
    r = get(kong_node, host, Authorization=ldap("einstein", "password"))
    assert r.status == 200, r.body
    assert "TLS established" in directory.log()
    r = get(kong_node, host, Authorization=ldap("einstein", "wrong"))
    assert r.status == 403


def test_verify_ldap_host_refuses_untrusted(
    kong_node: Node, upstream: Upstream, directory: slapd.SlapdServer
) -> None:
    """verify_ldap_host with the directory's self-signed certificate: the check fails (500)."""
    host = api(kong_node, upstream, directory, start_tls=True, verify_ldap_host=True)
    r = get(kong_node, host, Authorization=ldap("einstein", "password"))
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})


def test_unreachable_directory(kong_node: Node, upstream: Upstream) -> None:
    """Nothing listening on ldap_port: 500 with Kong's fixed message."""
    host = api(kong_node, upstream, None)
    r = get(kong_node, host, Authorization=ldap("einstein", "password"))
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})
