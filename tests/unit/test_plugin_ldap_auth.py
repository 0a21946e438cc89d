"""ldap-auth at request time (SPEC §4.2), with the directory replaced by a fake binder.

The real directory (slapd) is exercised end to end in tests/e2e/test_auth_ldap.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.ldap_auth.client import LdapUnavailable, bind_dn
from kongtx.plugins.ldap_auth.handler import Handler, parse_ldap
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import AuthWorld, kong_response

CONFIG = {
    "ldap_host": "ldap.test",
    "ldap_port": 389,
    "base_dn": "ou=people,dc=x",
    "attribute": "uid",
}
INVALID: tuple[int, Any, dict[str, str]] = (
    403,
    {"message": "Invalid authentication credentials"},
    {},
)


def ldap(user: str, password: str, scheme: str = "ldap") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeBinder:
    """The directory: dn -> password; records every bind; may be down."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.binds: list[tuple[str, str]] = []
        self.down = False

    def bind(self, dn: str, password: str) -> bool:
        self.binds.append((dn, password))
        if self.down:
            raise LdapUnavailable("connection refused")
        return self.users.get(dn) == password


class LdapAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.binder = FakeBinder({"uid=einstein,ou=people,dc=x": "password"})

    def handler(self, **config: Any) -> Handler:
        h = Handler(self.world.config("ldap-auth", **{**CONFIG, **config}), self.world.services)
        h.binder = self.binder  # type: ignore[assignment]
        return h

    def test_no_header(self) -> None:
        """No Authorization header: 401 Unauthorized + WWW-Authenticate: LDAP realm="kong"."""
        ctx = self.world.run(self.handler(), FakeContext())
        self.assertEqual(
            kong_response(ctx),
            (401, {"message": "Unauthorized"}, {"WWW-Authenticate": 'LDAP realm="kong"'}),
        )

    def test_success(self) -> None:
        """A good bind: X-Credential-Username, no consumer, spoofed X-Consumer-* removed."""
        ctx = FakeContext(
            headers={"Authorization": ldap("einstein", "password"), "X-Consumer-ID": "forged"}
        )
        self.world.run(self.handler(), ctx)
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Credential-Username"), "einstein")
        self.assertIsNone(ctx.headers.get("X-Consumer-ID"))
        self.assertIsNone(ctx.consumer)
        self.assertEqual(ctx.credential, {"username": "einstein"})
        self.assertEqual(self.binder.binds, [("uid=einstein,ou=people,dc=x", "password")])
        self.assertEqual(ctx.headers.get("Authorization"), ldap("einstein", "password"))

    def test_failures(self) -> None:
        """A wrong password, unknown user or garbled header: 403 Invalid authentication credentials."""
        for value in (ldap("einstein", "nope"), ldap("bohr", "x"), "ldap !!!", "Basic abc"):
            ctx = self.world.run(self.handler(), FakeContext(headers={"Authorization": value}))
            self.assertEqual(kong_response(ctx), INVALID, value)

    def test_proxy_authorization_first(self) -> None:
        """Proxy-Authorization is tried first, then Authorization."""
        ctx = FakeContext(
            headers={
                "Proxy-Authorization": ldap("einstein", "bad"),
                "Authorization": ldap("einstein", "password"),
            }
        )
        self.world.run(self.handler(), ctx)
        self.assertIsNone(ctx.response)
        self.assertEqual([p for _, p in self.binder.binds], ["bad", "password"])

    def test_cached_for_cache_ttl(self) -> None:
        """A success is cached for cache_ttl seconds (no bind), then checked again."""
        h = self.handler(cache_ttl=30)
        for _ in range(3):
            self.world.run(h, FakeContext(headers={"Authorization": ldap("einstein", "password")}))
        self.assertEqual(len(self.binder.binds), 1)
        self.world.reactor.advance(31)
        self.world.run(h, FakeContext(headers={"Authorization": ldap("einstein", "password")}))
        self.assertEqual(len(self.binder.binds), 2)

    def test_cache_keeps_no_password(self) -> None:
        """The cache holds a keyed digest, never the password, under a key naming the server."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"Authorization": ldap("einstein", "password")}))
        key = "ldap_credentials/ldap.test:389/ou=people,dc=x/einstein"
        hit, value = self.world.cache.peek(key)
        self.assertTrue(hit)
        self.assertNotIn("password", repr(value))

    def test_other_password_binds_again(self) -> None:
        """A password unlike the cached one is checked by the directory, not refused outright."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"Authorization": ldap("einstein", "password")}))
        self.binder.users["uid=einstein,ou=people,dc=x"] = "changed"
        ctx = self.world.run(h, FakeContext(headers={"Authorization": ldap("einstein", "changed")}))
        self.assertIsNone(ctx.response)
        self.assertEqual(len(self.binder.binds), 2)

    def test_server_down(self) -> None:
        """An unreachable directory: 500 with Kong's fixed message."""
        self.binder.down = True
        ctx = self.world.run(
            self.handler(), FakeContext(headers={"Authorization": ldap("einstein", "password")})
        )
        self.assertEqual(kong_response(ctx), (500, {"message": "An unexpected error occurred"}, {}))

    def test_timeout(self) -> None:
        """A bind that does not finish within the timeout: 500, and nothing is left scheduled."""
        h = self.handler(timeout=2000)
        pending: list[Deferred[bool]] = []

        def never(fn: Callable[[], bool]) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            pending.append(d)
            return d

        h.in_thread = never
        ctx = FakeContext(headers={"Authorization": ldap("einstein", "password")})
        d: Deferred[None] = Deferred.fromCoroutine(h.access(ctx))  # type: ignore[arg-type]
        self.assertNoResult(d)
        self.world.reactor.advance(3.1)
        self.successResultOf(d)
        self.assertEqual(ctx.response and ctx.response[0], 500)
        self.assertEqual(self.world.clock.pending, 0)

    def test_hide_credentials(self) -> None:
        """hide_credentials removes both authorization headers after success."""
        ctx = FakeContext(
            headers={
                "Authorization": ldap("einstein", "password"),
                "Proxy-Authorization": "x",
            }
        )
        self.world.run(self.handler(hide_credentials=True), ctx)
        self.assertIsNone(ctx.response)
        self.assertIsNone(ctx.headers.get("Authorization"))
        self.assertIsNone(ctx.headers.get("Proxy-Authorization"))

    def test_parse_and_dn(self) -> None:
        """Scheme is case-insensitive, the password may hold colons, the DN escapes the user."""
        self.assertEqual(parse_ldap(ldap("a", "b:c", "LDAP")), ("a", "b:c"))
        self.assertIsNone(parse_ldap(ldap("a", "")))
        self.assertEqual(bind_dn("uid", "bob,ou=admins", "dc=x"), "uid=bob\\,ou\\=admins,dc=x")


class HarnessTests(SynchronousTestCase):
    """tests/servers/slapd.py without slapd: skip loudly, or fail when ldap is required."""

    def setUp(self) -> None:
        from tests.servers import slapd

        self.slapd = slapd
        self.patch(slapd, "find_slapd", lambda: None)
        self.patch(slapd, "_server", None)
        self.patch(slapd, "_failure", None)

    def test_skips_without_slapd(self) -> None:
        """No slapd installed and ldap not required: the test is skipped, naming the fix."""
        self.patch(os, "environ", {**os.environ, "KONG_TEST_REQUIRE": "postgres"})
        with self.assertRaises(pytest.skip.Exception) as caught:
            self.slapd.server()
        self.assertIn(".ci/install-ldap", str(caught.exception))

    def test_fails_when_required(self) -> None:
        """KONG_TEST_REQUIRE containing ldap turns the skip into a failure."""
        self.patch(os, "environ", {**os.environ, "KONG_TEST_REQUIRE": "postgres,ldap"})
        with self.assertRaises(pytest.fail.Exception):
            self.slapd.server()


def test_ldap3_is_imported_only_when_ldap_auth_binds() -> None:
    """A node that loads every bundled plugin but never binds does not carry ldap3."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kongtx.plugins.registry import PluginRegistry\n"
        "import kongtx.plugins.ldap_auth.handler\n"
        "PluginRegistry.load([])\n"
        "assert 'ldap3' not in sys.modules, 'ldap3 imported at load'\n"
        "from kongtx.plugins.ldap_auth.client import bind_dn\n"
        "assert bind_dn('uid', 'a,b', 'dc=x') == 'uid=a\\\\,b,dc=x'\n"
        "assert 'ldap3' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
