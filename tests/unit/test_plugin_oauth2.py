"""oauth2 at request time (SPEC §4.3): the four grants, refresh, the endpoints' errors, tokens."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.oauth2.handler import Handler
from kongtx.plugins.oauth2.params import add_params, body_params
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import AuthWorld, kong_response

NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PROVISION = "provision-key-0123456789abcdef0"
API = {"id": "api-1", "name": "api", "request_path": "/mock"}
FORM = "application/x-www-form-urlencoded"
INVALID_TOKEN_HEADERS = {
    "WWW-Authenticate": 'Bearer realm="service" error="invalid_token" '
    'error_description="The access token is invalid or has expired"'
}


def form(**params: str) -> bytes:
    return "&".join(f"{k}={v}" for k, v in params.items()).encode()


class OAuth2TestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob", custom_id="b1")
        self.app = self.world.insert(
            "oauth2_credentials",
            consumer_id=self.bob["id"],
            name="app",
            redirect_uri=["http://app.test/cb", "http://app.test/other?x=1"],
        )

    def handler(self, **config: Any) -> Handler:
        defaults: dict[str, Any] = {
            "provision_key": PROVISION,
            "enable_authorization_code": True,
            "enable_implicit_grant": True,
            "enable_client_credentials": True,
            "enable_password_grant": True,
            "scopes": ["email", "profile"],
        }
        return Handler(self.world.config("oauth2", **{**defaults, **config}), self.world.services)

    def post(
        self,
        path: str,
        params: dict[str, str] | None = None,
        scheme: str = "https",
        h: Handler | None = None,
        headers: dict[str, str] | None = None,
        query: list[tuple[str, str | None]] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        ctx = FakeContext(
            api=API,
            method="POST",
            path=path,
            scheme=scheme,
            headers={"Content-Type": FORM, **(headers or {})},
            body=form(**(params or {})),
            query=query or [],
        )
        self.world.run(h or self.handler(), ctx)
        response = kong_response(ctx)
        assert response is not None, "the endpoint did not answer"
        return response

    def authorize(self, h: Handler | None = None, **params: Any) -> tuple[int, Any, dict[str, str]]:
        base = {
            "provision_key": PROVISION,
            "authenticated_userid": "user-1",
            "client_id": self.app["client_id"],
            "response_type": "code",
        }
        return self.post("/mock/oauth2/authorize", {**base, **params}, h=h)

    def token(self, h: Handler | None = None, **params: Any) -> tuple[int, Any, dict[str, str]]:
        base = {"client_id": self.app["client_id"], "client_secret": self.app["client_secret"]}
        return self.post("/mock/oauth2/token", {**base, **params}, h=h)

    def code(self, **params: str) -> str:
        status, body, _ = self.authorize(None, **params)
        self.assertEqual(status, 200, body)
        return str(parse_qs(urlsplit(body["redirect_uri"]).query)["code"][0])

    def call(self, h: Handler | None = None, **kw: Any) -> FakeContext:
        ctx = FakeContext(api=API, path="/mock/resource", **kw)
        return self.world.run(h or self.handler(), ctx)


class AuthorizeTests(OAuth2TestCase):
    def test_code_flow(self) -> None:
        """response_type=code: 200 with the redirect_uri carrying code and state; no-cache headers."""
        status, body, headers = self.authorize(state="s1")
        self.assertEqual((status, headers), (200, NO_CACHE))
        parts = urlsplit(body["redirect_uri"])
        self.assertEqual(f"{parts.scheme}://{parts.netloc}{parts.path}", "http://app.test/cb")
        query = parse_qs(parts.query)
        self.assertEqual(query["state"], ["s1"])
        self.assertRegex(query["code"][0], "^[0-9a-f]{32}$")
        codes = self.world.wait(self.world.dao.find_all("oauth2_authorization_codes", {}))
        self.assertEqual(len(codes), 1)
        self.assertEqual(codes[0]["credential_id"], self.app["id"])

    def test_implicit_flow(self) -> None:
        """response_type=token: the token goes in the fragment, without expires_in or refresh token."""
        status, body, _ = self.authorize(response_type="token", state="s", scope="email")
        self.assertEqual(status, 200)
        fragment = parse_qs(urlsplit(body["redirect_uri"]).fragment)
        self.assertEqual(fragment["token_type"], ["bearer"])
        self.assertEqual(fragment["state"], ["s"])
        self.assertNotIn("expires_in", fragment)
        self.assertNotIn("refresh_token", fragment)
        ctx = self.call(headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Authenticated-Scope"), "email")

    def test_existing_query_kept(self) -> None:
        """A registered redirect_uri's own query parameters are kept."""
        status, body, _ = self.authorize(redirect_uri="http://app.test/other?x=1")
        self.assertEqual(status, 200)
        query = parse_qs(urlsplit(body["redirect_uri"]).query)
        self.assertEqual(query["x"], ["1"])
        self.assertIn("code", query)

    def test_errors_before_the_client_is_known(self) -> None:
        """Transport, provision key and userid errors return the raw error object (400)."""
        self.assertEqual(
            self.post("/mock/oauth2/authorize", {}, scheme="http"),
            (400, {"error": "access_denied", "error_description": "You must use HTTPS"}, NO_CACHE),
        )
        self.assertEqual(
            self.authorize(provision_key="wrong", state="st"),
            (
                400,
                {
                    "error": "invalid_provision_key",
                    "error_description": "Invalid provision_key",
                    "state": "st",
                },
                NO_CACHE,
            ),
        )
        self.assertEqual(
            self.authorize(authenticated_userid=" "),
            (
                400,
                {
                    "error": "invalid_authenticated_userid",
                    "error_description": "Missing authenticated_userid parameter",
                },
                NO_CACHE,
            ),
        )
        self.assertEqual(
            self.authorize(client_id="nope"),
            (
                400,
                {"error": "invalid_client", "error_description": "Invalid client authentication"},
                NO_CACHE,
            ),
        )

    def test_errors_in_the_redirect(self) -> None:
        """Once the client is known, errors travel in the redirect_uri's query (400)."""
        cases = [
            ({"response_type": "other"}, "unsupported_response_type", "Invalid response_type"),
            ({"scope": "email admin"}, "invalid_scope", '"admin" is an invalid scope'),
            (
                {"redirect_uri": "http://evil.test/"},
                "invalid_request",
                "Invalid redirect_uri that does not match with any redirect_uri created with the application",
            ),
        ]
        for params, error, description in cases:
            status, body, _ = self.authorize(None, **params)
            self.assertEqual(status, 400)
            parts = urlsplit(body["redirect_uri"])
            self.assertEqual(parts.netloc, "app.test")
            query = parse_qs(parts.query)
            self.assertEqual((query["error"], query["error_description"]), ([error], [description]))

    def test_mandatory_scope_and_disabled_flow(self) -> None:
        """mandatory_scope wants a scope; a disabled code flow refuses response_type=code."""
        status, body, _ = self.authorize(h=self.handler(mandatory_scope=True))
        self.assertEqual(
            parse_qs(urlsplit(body["redirect_uri"]).query)["error_description"],
            ["You must specify a scope"],
        )
        status, body, _ = self.authorize(h=self.handler(enable_authorization_code=False))
        self.assertEqual(
            parse_qs(urlsplit(body["redirect_uri"]).query)["error"], ["unsupported_response_type"]
        )

    def test_endpoint_paths(self) -> None:
        """Endpoints answer under the API's request_path or at the root, with a trailing slash, POST only."""
        status, body, _ = self.post("/oauth2/token/", {"grant_type": "x"})
        self.assertEqual(body["error"], "invalid_client")
        ctx = self.call()
        self.assertEqual(ctx.response and ctx.response[0], 401)
        ctx = FakeContext(api=API, method="GET", path="/mock/oauth2/token")
        self.world.run(self.handler(), ctx)
        self.assertEqual(
            ctx.response and ctx.response[1],
            {"error": "invalid_request", "error_description": "The access token is missing"},
        )

    def test_terminated_tls(self) -> None:
        """accept_http_if_already_terminated trusts one X-Forwarded-Proto: https; several are refused."""
        h = self.handler(accept_http_if_already_terminated=True)
        status, body, _ = self.post(
            "/mock/oauth2/token",
            {"grant_type": "x"},
            scheme="http",
            h=h,
            headers={"X-Forwarded-Proto": "https"},
        )
        self.assertNotEqual(body.get("error"), "access_denied")
        ctx = FakeContext(
            api=API,
            method="POST",
            path="/mock/oauth2/token",
            headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "https")],
        )
        self.world.run(h, ctx)
        self.assertEqual(
            kong_response(ctx),
            (
                400,
                {
                    "error": "access_denied",
                    "error_description": "Only one X-Forwarded-Proto header allowed",
                },
                NO_CACHE,
            ),
        )


class TokenTests(OAuth2TestCase):
    def test_authorization_code_grant(self) -> None:
        """A code is exchanged once for a token with refresh token; the second try: Invalid code."""
        code = self.code(scope="email profile")
        status, body, headers = self.token(grant_type="authorization_code", code=code, state="z")
        self.assertEqual((status, headers), (200, NO_CACHE))
        self.assertEqual(
            set(body), {"access_token", "token_type", "expires_in", "refresh_token", "state"}
        )
        self.assertEqual(
            (body["token_type"], body["expires_in"], body["state"]), ("bearer", 7200, "z")
        )
        self.assertEqual(
            self.token(grant_type="authorization_code", code=code),
            (400, {"error": "invalid_request", "error_description": "Invalid code"}, NO_CACHE),
        )
        ctx = self.call(query=[("access_token", body["access_token"])])
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Consumer-ID"), self.bob["id"])
        self.assertEqual(ctx.headers.get("X-Consumer-Custom-ID"), "b1")
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")
        self.assertEqual(ctx.headers.get("X-Authenticated-Scope"), "email profile")
        self.assertEqual(ctx.headers.get("X-Authenticated-Userid"), "user-1")
        self.assertEqual(ctx.credential, self.app)

    def test_code_of_another_client(self) -> None:
        """A code issued to one application cannot be exchanged by another."""
        code = self.code()
        other = self.world.insert(
            "oauth2_credentials",
            consumer_id=self.bob["id"],
            name="o",
            redirect_uri=["http://o.test/"],
        )
        status, body, _ = self.token(
            grant_type="authorization_code",
            code=code,
            client_id=other["client_id"],
            client_secret=other["client_secret"],
        )
        self.assertEqual((status, body["error_description"]), (400, "Invalid code"))

    def test_client_credentials_grant(self) -> None:
        """client_credentials: a token without refresh token; provision_key checked only with a userid."""
        status, body, _ = self.token(grant_type="client_credentials", scope="email")
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body), {"access_token", "token_type", "expires_in"})
        status, body, _ = self.token(grant_type="client_credentials", authenticated_userid="u")
        self.assertEqual(body["error"], "invalid_provision_key")
        status, body, _ = self.token(
            grant_type="client_credentials", authenticated_userid="u", provision_key=PROVISION
        )
        self.assertEqual(status, 200)
        status, body, _ = self.token(
            h=self.handler(enable_client_credentials=False), grant_type="client_credentials"
        )
        self.assertEqual(
            body, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        )

    def test_password_grant(self) -> None:
        """password: provision_key and authenticated_userid required, then a token with refresh token."""
        self.assertEqual(self.token(grant_type="password")[1]["error"], "invalid_provision_key")
        self.assertEqual(
            self.token(grant_type="password", provision_key=PROVISION)[1]["error"],
            "invalid_authenticated_userid",
        )
        status, body, _ = self.token(
            grant_type="password", provision_key=PROVISION, authenticated_userid="u"
        )
        self.assertEqual(status, 200)
        self.assertIn("refresh_token", body)

    def test_refresh_token(self) -> None:
        """A refresh token gives a new token and deletes the old one; it is single use."""
        _, first, _ = self.token(
            grant_type="password", provision_key=PROVISION, authenticated_userid="u"
        )
        self.assertIsNone(
            self.call(headers={"Authorization": f"Bearer {first['access_token']}"}).response
        )
        status, second, _ = self.token(
            grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        self.assertEqual(status, 200)
        self.assertNotEqual(second["access_token"], first["access_token"])
        ctx = self.call(headers={"Authorization": f"Bearer {first['access_token']}"})
        self.assertEqual(ctx.response and ctx.response[0], 401)
        self.assertEqual(
            self.token(grant_type="refresh_token", refresh_token=first["refresh_token"])[1],
            {"error": "invalid_request", "error_description": "Invalid refresh_token"},
        )

    def test_client_authentication(self) -> None:
        """A bad secret: 400 invalid_client; via the Basic header: 401 + WWW-Authenticate; header works."""
        self.assertEqual(
            self.token(grant_type="password", client_secret="bad"),
            (
                400,
                {"error": "invalid_client", "error_description": "Invalid client authentication"},
                NO_CACHE,
            ),
        )
        basic = base64.b64encode(f"{self.app['client_id']}:bad".encode()).decode()
        status, body, headers = self.post(
            "/mock/oauth2/token",
            {"grant_type": "password"},
            headers={"Authorization": f"Basic {basic}"},
        )
        self.assertEqual((status, body["error"]), (401, "invalid_client"))
        self.assertEqual(headers["WWW-Authenticate"], 'Basic realm="OAuth2.0"')
        good = base64.b64encode(
            f"{self.app['client_id']}:{self.app['client_secret']}".encode()
        ).decode()
        status, body, _ = self.post(
            "/mock/oauth2/token",
            {"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {good}"},
        )
        self.assertEqual(status, 200, body)

    def test_params_from_json_and_query(self) -> None:
        """Parameters come from the query string and JSON bodies too."""
        ctx = FakeContext(
            api=API,
            method="POST",
            path="/mock/oauth2/token",
            scheme="https",
            headers={"Content-Type": "application/json"},
            body=json.dumps(
                {"client_secret": self.app["client_secret"], "grant_type": "client_credentials"}
            ).encode(),
            query=[("client_id", self.app["client_id"])],
        )
        self.world.run(self.handler(), ctx)
        self.assertEqual(ctx.response and ctx.response[0], 200)

    def test_token_expiration_zero(self) -> None:
        """token_expiration 0: no expires_in, no refresh token, and the token never expires."""
        h = self.handler(token_expiration=0)
        status, body, _ = self.token(
            h=h, grant_type="password", provision_key=PROVISION, authenticated_userid="u"
        )
        self.assertEqual(set(body), {"access_token", "token_type"})
        self.world.reactor.advance(10**7)
        self.assertIsNone(self.call(h, query=[("access_token", body["access_token"])]).response)


class ProtectedCallTests(OAuth2TestCase):
    def issue(self, h: Handler | None = None) -> str:
        _, body, _ = self.token(
            h=h, grant_type="password", provision_key=PROVISION, authenticated_userid="u"
        )
        return str(body["access_token"])

    def test_missing_token(self) -> None:
        """No token: 401 invalid_request + WWW-Authenticate: Bearer realm="service"."""
        self.assertEqual(
            kong_response(self.call()),
            (
                401,
                {"error": "invalid_request", "error_description": "The access token is missing"},
                {"WWW-Authenticate": 'Bearer realm="service"'},
            ),
        )

    def test_invalid_and_expired(self) -> None:
        """An unknown token, or one older than expires_in: 401 invalid_token with its header."""
        expected = (
            401,
            {
                "error": "invalid_token",
                "error_description": "The access token is invalid or has expired",
            },
            INVALID_TOKEN_HEADERS,
        )
        self.assertEqual(
            kong_response(self.call(headers={"Authorization": "Bearer nope"})), expected
        )
        token = self.issue()
        self.world.reactor.advance(7199)
        self.assertIsNone(self.call(headers={"Authorization": f"token {token}"}).response)
        self.world.reactor.advance(2)
        self.assertEqual(
            kong_response(self.call(headers={"Authorization": f"Bearer {token}"})), expected
        )

    def test_token_in_body(self) -> None:
        """access_token in a urlencoded body; hide_credentials rewrites the body without it."""
        h = self.handler(hide_credentials=True)
        token = self.issue(h)
        ctx = self.call(
            h, method="POST", headers={"Content-Type": FORM}, body=form(access_token=token, a="1")
        )
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.body, b"a=1")

    def test_hide_credentials(self) -> None:
        """hide_credentials removes the Authorization header or the query parameter."""
        h = self.handler(hide_credentials=True)
        token = self.issue(h)
        ctx = self.call(h, headers={"Authorization": f"Bearer {token}"})
        self.assertIsNone(ctx.headers.get("Authorization"))
        ctx = self.call(h, query=[("access_token", token), ("b", "2")])
        self.assertEqual(ctx.query, [("b", "2")])

    def test_revoked_token(self) -> None:
        """A token deleted through the Admin API stops working on the next request."""
        token = self.issue()
        self.assertIsNone(self.call(query=[("access_token", token)]).response)
        self.world.wait(self.world.dao.delete("oauth2_tokens", {"access_token": token}))
        self.assertEqual(self.call(query=[("access_token", token)]).status, 401)

    def test_spoofed_scope_header_dropped(self) -> None:
        """Client-sent X-Authenticated-* headers never survive, not even on the anonymous path."""
        guest = self.world.consumer("guest")
        ctx = self.call(
            self.handler(anonymous=guest["id"]),
            headers={"X-Authenticated-Userid": "admin", "X-Authenticated-Scope": "all"},
        )
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.consumer, guest)
        self.assertIsNone(ctx.headers.get("X-Authenticated-Userid"))
        self.assertIsNone(ctx.headers.get("X-Authenticated-Scope"))


class HelperTests(SynchronousTestCase):
    def test_add_params(self) -> None:
        """Response parameters are merged into the query, or the fragment for implicit grants."""
        self.assertEqual(
            add_params("http://a/cb?x=1", {"code": "c"}, False), "http://a/cb?x=1&code=c"
        )
        self.assertEqual(
            add_params("http://a/cb", {"access_token": "t"}, True), "http://a/cb#access_token=t"
        )

    def test_body_params(self) -> None:
        """Form, JSON and multipart bodies give parameters; bad JSON gives none."""
        self.assertEqual(body_params(FORM, b"a=1&b"), {"a": "1"})
        self.assertEqual(body_params("application/json", b"{bad"), {})
        multipart = b'--XX\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\npassword\r\n--XX--\r\n'
        self.assertEqual(
            body_params("multipart/form-data; boundary=XX", multipart), {"grant_type": "password"}
        )
