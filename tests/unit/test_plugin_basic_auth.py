"""basic-auth at request time (SPEC §4.2): scrypt and legacy SHA-1 passwords, constant time."""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.basic_auth import handler as basic_handler
from kongtx.plugins.basic_auth.crypto import (
    is_kdf_hash,
    legacy_hash,
    verify_basicauth_password,
)
from kongtx.plugins.basic_auth.handler import Handler, parse_basic
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import AuthWorld, kong_response

INVALID: tuple[int, Any, dict[str, str]] = (
    403,
    {"message": "Invalid authentication credentials"},
    {},
)


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


class BasicAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob")
        self.cred = self.world.insert(
            "basicauth_credentials", consumer_id=self.bob["id"], username="bob", password="s3cret"
        )
        self.verified: list[str] = []
        real = verify_basicauth_password

        def counting(stored: str, password: str, consumer_id: str) -> bool:
            self.verified.append(password)
            return real(stored, password, consumer_id)

        self.patch(basic_handler, "verify_basicauth_password", counting)

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("basic-auth", **config), self.world.services)

    def test_stored_with_kdf(self) -> None:
        """New passwords are stored with scrypt, not Kong's SHA-1."""
        self.assertTrue(is_kdf_hash(self.cred["password"]))

    def test_no_header(self) -> None:
        """Neither Authorization nor Proxy-Authorization: 401 Unauthorized + Basic realm."""
        ctx = self.world.run(self.handler(), FakeContext())
        self.assertEqual(
            kong_response(ctx),
            (401, {"message": "Unauthorized"}, {"WWW-Authenticate": 'Basic realm="kong"'}),
        )

    def test_good_password(self) -> None:
        """The right password authenticates; consumer headers and X-Credential-Username are set."""
        ctx = self.world.run(
            self.handler(), FakeContext(headers={"Authorization": basic("bob", "s3cret")})
        )
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Consumer-ID"), self.bob["id"])
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")
        self.assertEqual(ctx.headers.get("X-Credential-Username"), "bob")
        self.assertEqual(ctx.credential, self.cred)

    def test_bad_password_and_unknown_user(self) -> None:
        """A wrong password, an unknown user or a garbled header: 403 Invalid authentication credentials."""
        for value in (
            basic("bob", "wrong"),
            basic("alice", "s3cret"),
            "Basic !!!",
            basic("bob", ""),
            "Bearer xyz",
        ):
            ctx = self.world.run(self.handler(), FakeContext(headers={"Authorization": value}))
            self.assertEqual(kong_response(ctx), INVALID, value)

    def test_proxy_authorization_first(self) -> None:
        """Proxy-Authorization is tried first; an unknown user there falls back to Authorization."""
        ctx = self.world.run(
            self.handler(),
            FakeContext(
                headers={
                    "Proxy-Authorization": basic("nobody", "x"),
                    "Authorization": basic("bob", "s3cret"),
                }
            ),
        )
        self.assertIsNone(ctx.response)
        ctx = self.world.run(
            self.handler(),
            FakeContext(
                headers={
                    "Proxy-Authorization": basic("bob", "wrong"),
                    "Authorization": basic("bob", "s3cret"),
                }
            ),
        )
        self.assertEqual(kong_response(ctx), INVALID)

    def test_legacy_sha1_still_verifies(self) -> None:
        """A password row written by Kong 0.9 (SHA1(password..consumer_id)) still authenticates."""
        legacy = legacy_hash("old-pw", self.bob["id"])
        self.world.wait(
            self.world.store.update(
                "basicauth_credentials", {"id": self.cred["id"]}, {"password": legacy}, None
            )
        )
        self.world.cache.flush()
        ctx = self.world.run(
            self.handler(), FakeContext(headers={"Authorization": basic("bob", "old-pw")})
        )
        self.assertIsNone(ctx.response)
        ctx = self.world.run(
            self.handler(), FakeContext(headers={"Authorization": basic("bob", "s3cret")})
        )
        self.assertEqual(kong_response(ctx), INVALID)

    def test_slow_hash_runs_once_per_password(self) -> None:
        """After one scrypt verification, the same password verifies from a keyed digest."""
        h = self.handler()
        for _ in range(3):
            ctx = self.world.run(h, FakeContext(headers={"Authorization": basic("bob", "s3cret")}))
            self.assertIsNone(ctx.response)
        self.assertEqual(self.verified, ["s3cret"])
        ctx = self.world.run(h, FakeContext(headers={"Authorization": basic("bob", "wrong")}))
        self.assertEqual(kong_response(ctx), INVALID)
        self.assertEqual(self.verified, ["s3cret"])

    def test_changed_password_applies_at_once(self) -> None:
        """A changed password stops the old one on the next request."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"Authorization": basic("bob", "s3cret")}))
        self.world.wait(
            self.world.dao.update(
                "basicauth_credentials", {"id": self.cred["id"]}, {"password": "n3w"}
            )
        )
        ctx = self.world.run(h, FakeContext(headers={"Authorization": basic("bob", "s3cret")}))
        self.assertEqual(kong_response(ctx), INVALID)
        ctx = self.world.run(h, FakeContext(headers={"Authorization": basic("bob", "n3w")}))
        self.assertIsNone(ctx.response)

    def test_hide_credentials(self) -> None:
        """hide_credentials removes the header that was read."""
        ctx = self.world.run(
            self.handler(hide_credentials=True),
            FakeContext(headers={"Authorization": basic("bob", "s3cret")}),
        )
        self.assertIsNone(ctx.response)
        self.assertIsNone(ctx.headers.get("Authorization"))

    def test_parse_basic(self) -> None:
        """The header parser follows Kong's patterns: scheme case, colons in the password."""
        self.assertEqual(parse_basic(basic("u", "p:q", "basic")), ("u", "p:q"))
        self.assertIsNone(parse_basic(basic("", "p")))
        self.assertIsNone(parse_basic("Basic " + base64.b64encode(b"\xff:\xfe").decode()))
