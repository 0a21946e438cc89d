"""oauth2 through a real node (SPEC §4.3): every flow over HTTPS, errors, protected calls."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from proxy_support import Node, Upstream, http

NO_CACHE = ("no-store", "no-cache")


def uniq(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def insecure() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Provider:
    """One API with the oauth2 plugin, a consumer and an application."""

    def __init__(self, node: Node, upstream: Upstream, **config: Any) -> None:
        self.node = node
        self.path = "/" + uniq("oa")
        api = node.add_api(request_path=self.path, upstream_url=upstream.url)
        plugin = node.add_plugin(
            api,
            "oauth2",
            {
                "scopes": "email,profile",
                "enable_authorization_code": True,
                "enable_implicit_grant": True,
                "enable_client_credentials": True,
                "enable_password_grant": True,
                **config,
            },
        )
        self.provision_key = plugin["config"]["provision_key"]
        self.consumer = node.admin_call("POST", "/consumers", {"username": uniq("u")})
        self.app = node.admin_call(
            "POST",
            f"/consumers/{self.consumer['id']}/oauth2",
            {"name": "app", "redirect_uri": "http://app.test/cb"},
        )

    def post(
        self, endpoint: str, params: dict[str, str], https: bool = True, **headers: str
    ) -> Any:
        base = self.node.proxy_ssl if https else self.node.proxy
        return http(
            "POST",
            f"{base}{self.path}/oauth2/{endpoint}",
            urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", **headers},
            context=insecure() if https else None,
        )

    def client(self) -> dict[str, str]:
        return {"client_id": self.app["client_id"], "client_secret": self.app["client_secret"]}

    def get(self, **headers: str) -> Any:
        return http("GET", f"{self.node.proxy}{self.path}/data", headers=headers)


def test_authorization_code_flow(kong_node: Node, upstream: Upstream) -> None:
    """authorize (code) -> token -> protected call with every upstream header -> refresh."""
    p = Provider(kong_node, upstream)
    r = p.post(
        "authorize",
        {
            "provision_key": p.provision_key,
            "authenticated_userid": "user-7",
            "client_id": p.app["client_id"],
            "response_type": "code",
            "scope": "email",
            "state": "xyz",
        },
    )
    assert r.status == 200, r.body
    assert (r.header("Cache-Control"), r.header("Pragma")) == NO_CACHE
    query = parse_qs(urlsplit(r.json()["redirect_uri"]).query)
    assert query["state"] == ["xyz"]
    code = query["code"][0]

    r = p.post("token", {"grant_type": "authorization_code", "code": code, **p.client()})
    assert r.status == 200, r.body
    token = r.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 7200
    assert "refresh_token" in token
    r = p.post("token", {"grant_type": "authorization_code", "code": code, **p.client()})
    assert (r.status, r.json()) == (
        400,
        {"error": "invalid_request", "error_description": "Invalid code"},
    )

    r = p.get(Authorization=f"Bearer {token['access_token']}")
    assert r.status == 200, r.body
    seen = {n.lower(): v for n, v in r.json()["headers"]}
    assert seen["x-consumer-id"] == p.consumer["id"]
    assert seen["x-consumer-username"] == p.consumer["username"]
    assert seen["x-authenticated-scope"] == "email"
    assert seen["x-authenticated-userid"] == "user-7"

    r = p.post(
        "token",
        {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], **p.client()},
    )
    assert r.status == 200, r.body
    assert p.get(Authorization=f"Bearer {token['access_token']}").status == 401
    assert p.get(Authorization=f"Bearer {r.json()['access_token']}").status == 200


def test_implicit_client_credentials_password(kong_node: Node, upstream: Upstream) -> None:
    """The implicit grant (token in the fragment), client_credentials and password grants."""
    p = Provider(kong_node, upstream)
    r = p.post(
        "authorize",
        {
            "provision_key": p.provision_key,
            "authenticated_userid": "u",
            "client_id": p.app["client_id"],
            "response_type": "token",
        },
    )
    assert r.status == 200, r.body
    fragment = parse_qs(urlsplit(r.json()["redirect_uri"]).fragment)
    assert fragment["token_type"] == ["bearer"] and "access_token" in fragment
    assert p.get(Authorization=f"Bearer {fragment['access_token'][0]}").status == 200

    basic = base64.b64encode(f"{p.app['client_id']}:{p.app['client_secret']}".encode()).decode()
    r = p.post("token", {"grant_type": "client_credentials"}, Authorization=f"Basic {basic}")
    assert r.status == 200, r.body
    assert set(r.json()) == {"access_token", "token_type", "expires_in"}

    r = p.post(
        "token",
        {
            "grant_type": "password",
            "provision_key": p.provision_key,
            "authenticated_userid": "u",
            **p.client(),
        },
    )
    assert r.status == 200, r.body
    assert p.get(Authorization=f"token {r.json()['access_token']}").status == 200


def test_endpoint_errors(kong_node: Node, upstream: Upstream) -> None:
    """HTTPS required, bad provision key, bad grant type, bad client (400, or 401 via Basic)."""
    p = Provider(kong_node, upstream, enable_password_grant=False)
    r = p.post("token", {"grant_type": "password"}, https=False)
    assert (r.status, r.json()) == (
        400,
        {"error": "access_denied", "error_description": "You must use HTTPS"},
    )
    r = p.post("authorize", {"provision_key": "wrong"})
    assert (r.status, r.json()) == (
        400,
        {"error": "invalid_provision_key", "error_description": "Invalid provision_key"},
    )
    r = p.post("token", {"grant_type": "password", **p.client()})
    assert (r.status, r.json()) == (
        400,
        {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
    )
    r = p.post("token", {"grant_type": "authorization_code", "client_id": "nope"})
    assert (r.status, r.json()["error"]) == (400, "invalid_client")
    basic = base64.b64encode(b"nope:nope").decode()
    r = p.post("token", {"grant_type": "authorization_code"}, Authorization=f"Basic {basic}")
    assert (r.status, r.json()["error"]) == (401, "invalid_client")
    assert r.header("WWW-Authenticate") == 'Basic realm="OAuth2.0"'


def test_protected_call_errors(kong_node: Node, upstream: Upstream) -> None:
    """No token: invalid_request + Bearer realm; unknown token: invalid_token + its header."""
    p = Provider(kong_node, upstream)
    r = p.get()
    assert r.status == 401
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "The access token is missing",
    }
    assert r.header("WWW-Authenticate") == 'Bearer realm="service"'
    r = p.get(Authorization="Bearer nope")
    assert r.status == 401
    assert r.json() == {
        "error": "invalid_token",
        "error_description": "The access token is invalid or has expired",
    }
    assert r.header("WWW-Authenticate") == (
        'Bearer realm="service" error="invalid_token" '
        'error_description="The access token is invalid or has expired"'
    )


def test_terminated_tls_and_hide_credentials(kong_node: Node, upstream: Upstream) -> None:
    """X-Forwarded-Proto: https is trusted when configured; hide_credentials strips the token."""
    p = Provider(kong_node, upstream, accept_http_if_already_terminated=True, hide_credentials=True)
    r = p.post(
        "token",
        {"grant_type": "client_credentials", **p.client()},
        https=False,
        **{"X-Forwarded-Proto": "https"},
    )
    assert r.status == 200, r.body
    access = r.json()["access_token"]
    r = http("GET", f"{kong_node.proxy}{p.path}/data?access_token={access}&keep=1")
    assert r.status == 200
    assert r.json()["query"] == "keep=1"
    r = http(
        "POST",
        f"{kong_node.proxy}{p.path}/data",
        urlencode({"access_token": access, "x": "1"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 200
    assert r.json()["body"] == "x=1"


def test_revoked_token_via_admin(kong_node: Node, upstream: Upstream) -> None:
    """A token deleted through /oauth2_tokens stops working on the next request."""
    p = Provider(kong_node, upstream)
    r = p.post("token", {"grant_type": "client_credentials", **p.client()})
    access = r.json()["access_token"]
    assert p.get(Authorization=f"Bearer {access}").status == 200
    kong_node.admin_call("DELETE", f"/oauth2_tokens/{access}")
    assert p.get(Authorization=f"Bearer {access}").status == 401
    assert json.loads(p.get(Authorization=f"Bearer {access}").body)["error"] == "invalid_token"


def test_authorize_and_token_error_messages(kong_node: Node, upstream: Upstream) -> None:
    """The remaining /authorize and /token errors, raw or inside the redirect_uri, as SPEC words them."""
    p = Provider(kong_node, upstream, mandatory_scope=True)
    base = {
        "provision_key": p.provision_key,
        "authenticated_userid": "u",
        "client_id": p.app["client_id"],
        "response_type": "code",
        "scope": "email",
    }
    r = p.post("authorize", {**base, "authenticated_userid": ""})
    assert (r.status, r.json()) == (
        400,
        {
            "error": "invalid_authenticated_userid",
            "error_description": "Missing authenticated_userid parameter",
        },
    )
    cases = [
        ({"response_type": "nope"}, "unsupported_response_type", "Invalid response_type"),
        ({"scope": "admin"}, "invalid_scope", '"admin" is an invalid scope'),
        (
            {"redirect_uri": "http://elsewhere.test/"},
            "invalid_request",
            "Invalid redirect_uri that does not match with any redirect_uri created with the application",
        ),
    ]
    for extra, error, description in cases:
        r = p.post("authorize", {**base, **extra, "state": "s"})
        assert r.status == 400, extra
        redirect = urlsplit(r.json()["redirect_uri"])
        assert redirect.netloc == "app.test"
        query = parse_qs(redirect.query)
        assert (query["error"], query["error_description"], query["state"]) == (
            [error],
            [description],
            ["s"],
        )
    params = {k: v for k, v in base.items() if k != "scope"}
    r = p.post("authorize", params)
    query = parse_qs(urlsplit(r.json()["redirect_uri"]).query)
    assert query["error_description"] == ["You must specify a scope"]
    r = p.post("authorize", {**base, "client_id": "unknown"})
    assert (r.status, r.json()) == (
        400,
        {"error": "invalid_client", "error_description": "Invalid client authentication"},
    )
    r = p.post("token", {"grant_type": "refresh_token", "refresh_token": "nope", **p.client()})
    assert (r.status, r.json()) == (
        400,
        {"error": "invalid_request", "error_description": "Invalid refresh_token"},
    )
    r = p.post(
        "token",
        {"grant_type": "password", "provision_key": p.provision_key, **p.client()},
    )
    assert r.json()["error_description"] == "Missing authenticated_userid parameter"
