"""jwt at request time (SPEC §4.2): every message of Kong 0.9, HS256 and RS256 through PyJWT."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.jwt.handler import Handler, decode_token
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import NOW, AuthWorld, kong_response

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class JwtTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob")
        self.secret = self.world.insert(
            "jwt_secrets", consumer_id=self.bob["id"], key="bob-key", secret=SECRET
        )

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("jwt", **config), self.world.services)

    def token(
        self, claims: dict[str, Any] | None = None, secret: str = SECRET, **header: Any
    ) -> str:
        return pyjwt.encode(
            {"iss": "bob-key", **(claims or {})}, secret, algorithm="HS256", headers=header or None
        )

    def check(self, ctx: FakeContext, status: int, body: Any, **config: Any) -> None:
        self.world.run(self.handler(**config), ctx)
        self.assertEqual(kong_response(ctx), (status, body, {}))

    def test_valid_token_in_header_and_query(self) -> None:
        """A valid HS256 token authenticates from Authorization: Bearer or the jwt query param."""
        for ctx in (
            FakeContext(headers={"Authorization": f"Bearer {self.token()}"}),
            FakeContext(query=[("jwt", self.token())]),
        ):
            self.world.run(self.handler(), ctx)
            self.assertIsNone(ctx.response)
            self.assertEqual(ctx.headers.get("X-Consumer-ID"), self.bob["id"])
            self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")
            self.assertEqual(ctx.credential, self.secret)

    def test_no_token(self) -> None:
        """No token: 401 Unauthorized."""
        self.check(FakeContext(), 401, {"message": "Unauthorized"})

    def test_multiple_and_unrecognizable(self) -> None:
        """A repeated param: Multiple tokens provided; a bare flag: Unrecognizable token."""
        self.check(
            FakeContext(query=[("jwt", "a"), ("jwt", "b")]),
            401,
            {"message": "Multiple tokens provided"},
        )
        self.check(FakeContext(query=[("jwt", None)]), 401, {"message": "Unrecognizable token"})

    def test_bad_tokens(self) -> None:
        """Each decoding failure gives Kong's 'Bad token; …' reason."""
        cases = {
            "abc": "invalid JSON",
            f"{b64(b'nope')}.{b64({})}.x": "invalid JSON",
            f"{b64({'typ': 'XYZ', 'alg': 'HS256'})}.{b64({})}.x": "invalid typ",
            f"{b64({'typ': 'JWT', 'alg': 'none'})}.{b64({})}.x": "invalid alg",
            f"{b64({'alg': 'HS256'})}.{b64([1])}.x": "invalid claims",
            f"{b64({'alg': 'HS256'})}.{b64({})}.a!b": "invalid signature",
        }
        for token, reason in cases.items():
            self.check(
                FakeContext(headers={"Authorization": f"Bearer {token}"}),
                401,
                {"message": f"Bad token; {reason}"},
            )

    def test_missing_key_claim(self) -> None:
        """No claim named key_claim_name: 401 No mandatory '<claim>' in claims."""
        token = pyjwt.encode({"sub": "x"}, SECRET, algorithm="HS256")
        self.check(
            FakeContext(query=[("jwt", token)]), 401, {"message": "No mandatory 'iss' in claims"}
        )
        self.check(
            FakeContext(query=[("jwt", token)]),
            401,
            {"message": "No mandatory 'kid' in claims"},
            key_claim_name="kid",
        )

    def test_unknown_key(self) -> None:
        """A key that names no credential: 403 No credentials found for given '<claim>'."""
        self.check(
            FakeContext(query=[("jwt", self.token({"iss": "other"}))]),
            403,
            {"message": "No credentials found for given 'iss'"},
        )

    def test_signature_and_algorithm(self) -> None:
        """Another secret: 403 Invalid signature; another algorithm than the credential's: Invalid algorithm."""
        self.check(
            FakeContext(query=[("jwt", self.token(secret="x" * 40))]),
            403,
            {"message": "Invalid signature"},
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rs = pyjwt.encode({"iss": "bob-key"}, key, algorithm="RS256")
        self.check(FakeContext(query=[("jwt", rs)]), 403, {"message": "Invalid algorithm"})

    def test_rs256(self) -> None:
        """An RS256 credential verifies with its public key; a token of another key fails."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.world.insert(
            "jwt_secrets",
            consumer_id=self.bob["id"],
            key="rsa-key",
            algorithm="RS256",
            rsa_public_key=pem.decode(),
        )
        good = pyjwt.encode({"iss": "rsa-key"}, key, algorithm="RS256")
        ctx = self.world.run(self.handler(), FakeContext(query=[("jwt", good)]))
        self.assertIsNone(ctx.response)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = pyjwt.encode({"iss": "rsa-key"}, other, algorithm="RS256")
        self.check(FakeContext(query=[("jwt", bad)]), 403, {"message": "Invalid signature"})

    def test_secret_is_base64(self) -> None:
        """secret_is_base64 decodes the stored secret before verifying; a non-base64 one is refused."""
        raw = b"\x00\x01binary-secret-of-32-bytes-long!!"
        self.world.insert(
            "jwt_secrets",
            consumer_id=self.bob["id"],
            key="b64-key",
            secret=base64.urlsafe_b64encode(raw).decode(),
        )
        token = pyjwt.encode({"iss": "b64-key"}, raw, algorithm="HS256")
        ctx = self.world.run(
            self.handler(secret_is_base64=True), FakeContext(query=[("jwt", token)])
        )
        self.assertIsNone(ctx.response)
        self.check(
            FakeContext(query=[("jwt", self.token())]),
            403,
            {"message": "Invalid key/secret"},
            secret_is_base64=True,
        )

    def test_claims_to_verify(self) -> None:
        """exp and nbf are checked only when listed: expired, not yet valid, not a number."""
        expired = self.token({"exp": NOW - 1})
        ctx = self.world.run(self.handler(), FakeContext(query=[("jwt", expired)]))
        self.assertIsNone(ctx.response)
        self.check(
            FakeContext(query=[("jwt", expired)]),
            403,
            {"exp": "token expired"},
            claims_to_verify=["exp"],
        )
        self.check(
            FakeContext(query=[("jwt", self.token({"nbf": NOW + 60}))]),
            403,
            {"nbf": "token not valid yet"},
            claims_to_verify=["nbf"],
        )
        self.check(
            FakeContext(query=[("jwt", self.token({"exp": "soon", "nbf": NOW + 1}))]),
            403,
            {"exp": "must be a number", "nbf": "token not valid yet"},
            claims_to_verify=["exp", "nbf"],
        )
        fresh = self.token({"exp": NOW + 60, "nbf": NOW})
        ctx = self.world.run(
            self.handler(claims_to_verify=["exp", "nbf"]), FakeContext(query=[("jwt", fresh)])
        )
        self.assertIsNone(ctx.response)

    def test_uri_param_names(self) -> None:
        """uri_param_names picks the query parameters searched, in order."""
        ctx = self.world.run(
            self.handler(uri_param_names=["token", "t"]), FakeContext(query=[("t", self.token())])
        )
        self.assertIsNone(ctx.response)

    def test_deleted_secret(self) -> None:
        """A deleted jwt secret stops working on the next request (jwtauth_credentials:<key>)."""
        h = self.handler()
        self.world.run(h, FakeContext(query=[("jwt", self.token())]))
        self.world.wait(self.world.dao.delete("jwt_secrets", {"id": self.secret["id"]}))
        ctx = self.world.run(h, FakeContext(query=[("jwt", self.token())]))
        self.assertEqual(
            kong_response(ctx), (403, {"message": "No credentials found for given 'iss'"}, {})
        )

    def test_decode_keeps_three_parts(self) -> None:
        """Extra dot-separated parts are ignored as Kong's parser does."""
        decoded, reason = decode_token(self.token() + ".extra")
        self.assertIsNone(reason)
        assert decoded is not None
        self.assertEqual(decoded.claims, {"iss": "bob-key"})

    def test_consumer_gone(self) -> None:
        """A secret whose consumer cannot be found: 403 Could not find consumer for '<claim>=<key>'."""
        self.world.cache.set(f"consumers:{self.bob['id']}", None)
        self.check(
            FakeContext(query=[("jwt", self.token())]),
            403,
            {"message": "Could not find consumer for 'iss=bob-key'"},
        )

    def test_short_secret_verifies_without_log_noise(self) -> None:
        """A short HS256 secret verifies without PyJWT's key-length warning on every request."""
        self.world.insert("jwt_secrets", consumer_id=self.bob["id"], key="short", secret="abc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            token = pyjwt.encode({"iss": "short"}, "abc", algorithm="HS256")
        ctx = self.world.run(self.handler(), FakeContext(query=[("jwt", token)]))
        self.assertIsNone(ctx.response)
        self.assertEqual(self.flushWarnings(), [])
