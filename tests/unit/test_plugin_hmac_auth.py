"""hmac-auth at request time (SPEC §4.2): Kong 0.9's signing string, clock skew, messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
from email.utils import formatdate
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.hmac_auth.handler import Handler, parse_http_date, signing_string
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import NOW, AuthWorld, kong_response

NO_DATE: tuple[int, Any, dict[str, str]] = (
    403,
    {
        "message": "HMAC signature cannot be verified, a valid date or x-date header is "
        "required for HMAC Authentication"
    },
    {},
)
NOT_VERIFIED: tuple[int, Any, dict[str, str]] = (
    403,
    {"message": "HMAC signature cannot be verified"},
    {},
)
MISMATCH: tuple[int, Any, dict[str, str]] = (403, {"message": "HMAC signature does not match"}, {})


def signature(secret: str, text: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    ).decode()


def authorization(user: str, headers: str, sig: str) -> str:
    return f'hmac username="{user}", algorithm="hmac-sha1", headers="{headers}", signature="{sig}"'


class HmacAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob")
        self.cred = self.world.insert(
            "hmacauth_credentials", consumer_id=self.bob["id"], username="bob", secret="sekret"
        )
        self.date = formatdate(NOW, usegmt=True)

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("hmac-auth", **config), self.world.services)

    def signed(
        self, header: str = "Authorization", secret: str = "sekret", **extra: str
    ) -> FakeContext:
        text = f"date: {self.date}\ncontent-md5:"
        headers = {"Date": self.date, **extra}
        headers[header] = authorization("bob", "date content-md5", signature(secret, text))
        return FakeContext(headers=headers)

    def test_no_authorization(self) -> None:
        """Neither header: 401 Unauthorized with no WWW-Authenticate."""
        ctx = self.world.run(self.handler(), FakeContext(headers={"Date": self.date}))
        self.assertEqual(kong_response(ctx), (401, {"message": "Unauthorized"}, {}))

    def test_valid_signature(self) -> None:
        """A good signature authenticates and sets X-Credential-Username and the consumer headers."""
        ctx = self.world.run(self.handler(), self.signed())
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Consumer-ID"), self.bob["id"])
        self.assertEqual(ctx.headers.get("X-Credential-Username"), "bob")
        self.assertEqual(ctx.credential, self.cred)

    def test_proxy_authorization(self) -> None:
        """Proxy-Authorization carries the signature just as well."""
        ctx = self.world.run(self.handler(), self.signed("Proxy-Authorization"))
        self.assertIsNone(ctx.response)

    def test_date_required_and_skew(self) -> None:
        """No date, a bad date or one beyond clock_skew: 403 with the date message; X-Date also works."""
        for headers in (
            {},
            {"Date": "yesterday"},
            {"Date": formatdate(NOW - 301, usegmt=True)},
            {"X-Date": formatdate(NOW + 400, usegmt=True)},
        ):
            ctx = FakeContext(
                headers={"Authorization": authorization("bob", "date", "x"), **headers}
            )
            self.world.run(self.handler(), ctx)
            self.assertEqual(kong_response(ctx), NO_DATE, headers)
        ctx = FakeContext(
            headers={
                "Authorization": authorization(
                    "bob", "x-date", signature("sekret", f"x-date: {self.date}")
                ),
                "X-Date": self.date,
                "Date": "garbage",
            }
        )
        self.world.run(self.handler(clock_skew=10), ctx)
        self.assertIsNone(ctx.response)

    def test_unparsable_and_unknown_user(self) -> None:
        """An unparsable header or an unknown username: 403 cannot be verified."""
        for value in ("hmac nonsense", authorization("alice", "date", "abc=")):
            ctx = FakeContext(headers={"Authorization": value, "Date": self.date})
            self.world.run(self.handler(), ctx)
            self.assertEqual(kong_response(ctx), NOT_VERIFIED, value)

    def test_wrong_signature(self) -> None:
        """A signature made with another secret, or not base64: 403 does not match."""
        self.assertEqual(
            kong_response(self.world.run(self.handler(), self.signed(secret="x"))), MISMATCH
        )
        ctx = FakeContext(
            headers={"Authorization": authorization("bob", "date", "%%%"), "Date": self.date}
        )
        self.assertEqual(kong_response(self.world.run(self.handler(), ctx)), MISMATCH)

    def test_signing_string(self) -> None:
        """request-line is the raw first line; present headers 'name: value'; absent 'name:'."""
        ctx = FakeContext(method="POST", path="/p", query=[("a", "1")], headers={"X-A": "v"})
        self.assertEqual(
            signing_string(ctx, ["request-line", "x-a", "x-missing"]),
            "POST /p?a=1 HTTP/1.1\nx-a: v\nx-missing:",
        )
        ctx.request_uri = "/raw%20path?q"  # type: ignore[attr-defined]
        self.assertEqual(signing_string(ctx, ["request-line"]), "POST /raw%20path?q HTTP/1.1")

    def test_hide_credentials_after_signing(self) -> None:
        """hide_credentials drops the header read, yet it may be among the signed headers."""
        text = f"date: {self.date}"
        ctx = FakeContext(
            headers={
                "Date": self.date,
                "Authorization": authorization("bob", "date", signature("sekret", text)),
            }
        )
        self.world.run(self.handler(hide_credentials=True), ctx)
        self.assertIsNone(ctx.response)
        self.assertIsNone(ctx.headers.get("Authorization"))

    def test_no_secret_never_matches(self) -> None:
        """A credential without a secret cannot be used (0.9 never generated one)."""
        self.world.insert("hmacauth_credentials", consumer_id=self.bob["id"], username="nosecret")
        text = f"date: {self.date}"
        ctx = FakeContext(
            headers={
                "Date": self.date,
                "Authorization": authorization("nosecret", "date", signature("", text)),
            }
        )
        self.assertEqual(kong_response(self.world.run(self.handler(), ctx)), MISMATCH)

    def test_http_dates(self) -> None:
        """RFC 1123, RFC 850 and asctime dates parse as GMT."""
        self.assertEqual(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777)
        self.assertEqual(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777)
        self.assertEqual(parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777)
        self.assertIsNone(parse_http_date("soon"))
