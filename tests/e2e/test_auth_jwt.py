"""jwt through a real node (SPEC §4.2): every status and message, HS256 and RS256."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from proxy_support import Node, Upstream, http


def uniq(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def b64(obj: Any) -> str:
    raw = json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def setup(node: Node, upstream: Upstream, **config: Any) -> tuple[str, dict[str, Any]]:
    host = uniq() + ".jwt.test"
    api = node.add_api(request_host=host, upstream_url=upstream.url)
    node.add_plugin(api, "jwt", config)
    bob: dict[str, Any] = node.admin_call("POST", "/consumers", {"username": uniq("u")})
    return host, bob


def call(node: Node, host: str, path: str = "/", **headers: str) -> Any:
    return http("GET", node.proxy + path, headers={"Host": host, **headers})


def test_jwt_messages(kong_node: Node, upstream: Upstream) -> None:
    """Each failure gives SPEC's status and message; a good HS256 token passes with consumer headers."""
    host, bob = setup(kong_node, upstream, claims_to_verify="exp")
    secret = kong_node.admin_call("POST", f"/consumers/{bob['id']}/jwt", {})
    assert len(secret["key"]) == 32 and len(secret["secret"]) == 32

    def token(claims: dict[str, Any], key: str = secret["secret"]) -> str:
        return pyjwt.encode(claims, key, algorithm="HS256")

    cases: list[tuple[dict[str, str], str, int, Any]] = [
        ({}, "/", 401, {"message": "Unauthorized"}),
        ({}, "/?jwt=a&jwt=b", 401, {"message": "Multiple tokens provided"}),
        ({}, "/?jwt", 401, {"message": "Unrecognizable token"}),
        ({"Authorization": "Bearer x.y.z"}, "/", 401, {"message": "Bad token; invalid JSON"}),
        (
            {"Authorization": f"Bearer {b64({'typ': 'X', 'alg': 'HS256'})}.{b64({})}.c"},
            "/",
            401,
            {"message": "Bad token; invalid typ"},
        ),
        (
            {"Authorization": f"Bearer {b64({'alg': 'HS512'})}.{b64({})}.c"},
            "/",
            401,
            {"message": "Bad token; invalid alg"},
        ),
        (
            {"Authorization": f"Bearer {b64({'alg': 'HS256'})}.{b64('s')}.c"},
            "/",
            401,
            {"message": "Bad token; invalid claims"},
        ),
        (
            {"Authorization": f"Bearer {b64({'alg': 'HS256'})}.{b64({})}.@@"},
            "/",
            401,
            {"message": "Bad token; invalid signature"},
        ),
        ({}, f"/?jwt={token({'sub': 'x'})}", 401, {"message": "No mandatory 'iss' in claims"}),
        (
            {},
            f"/?jwt={token({'iss': 'nobody'})}",
            403,
            {"message": "No credentials found for given 'iss'"},
        ),
        (
            {},
            f"/?jwt={token({'iss': secret['key']}, 'x' * 32)}",
            403,
            {"message": "Invalid signature"},
        ),
        (
            {},
            f"/?jwt={token({'iss': secret['key'], 'exp': int(time.time()) - 10})}",
            403,
            {"exp": "token expired"},
        ),
        (
            {},
            f"/?jwt={token({'iss': secret['key'], 'exp': 'later'})}",
            403,
            {"exp": "must be a number"},
        ),
    ]
    for headers, path, status, body in cases:
        r = call(kong_node, host, path, **headers)
        assert (r.status, r.json()) == (status, body), (headers, path)

    good = token({"iss": secret["key"], "exp": int(time.time()) + 60})
    r = call(kong_node, host, Authorization=f"Bearer {good}")
    assert r.status == 200, r.body
    seen = {n.lower(): v for n, v in r.json()["headers"]}
    assert seen["x-consumer-id"] == bob["id"]
    assert seen["x-consumer-username"] == bob["username"]


def test_jwt_rs256_algorithm_and_nbf(kong_node: Node, upstream: Upstream) -> None:
    """RS256 verifies with the stored public key; an HS256 token for it: Invalid algorithm; nbf."""
    host, bob = setup(kong_node, upstream, claims_to_verify="nbf", key_claim_name="kid")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kong_node.admin_call(
        "POST",
        f"/consumers/{bob['id']}/jwt",
        {"key": "rsa-" + host, "algorithm": "RS256", "rsa_public_key": pem.decode()},
    )
    good = pyjwt.encode({"kid": "rsa-" + host}, key, algorithm="RS256")
    assert call(kong_node, host, f"/?jwt={good}").status == 200
    hs = pyjwt.encode({"kid": "rsa-" + host}, "k" * 32, algorithm="HS256")
    r = call(kong_node, host, f"/?jwt={hs}")
    assert (r.status, r.json()) == (403, {"message": "Invalid algorithm"})
    early = pyjwt.encode(
        {"kid": "rsa-" + host, "nbf": int(time.time()) + 600}, key, algorithm="RS256"
    )
    r = call(kong_node, host, f"/?jwt={early}")
    assert (r.status, r.json()) == (403, {"nbf": "token not valid yet"})


def test_jwt_secret_is_base64(kong_node: Node, upstream: Upstream) -> None:
    """secret_is_base64: the stored secret is decoded first; a non-base64 one: Invalid key/secret."""
    host, bob = setup(kong_node, upstream, secret_is_base64=True)
    raw = b"binary\x00secret-for-the-e2e-test-32b"
    kong_node.admin_call(
        "POST",
        f"/consumers/{bob['id']}/jwt",
        {"key": "b64-" + host, "secret": base64.b64encode(raw).decode()},
    )
    kong_node.admin_call(
        "POST", f"/consumers/{bob['id']}/jwt", {"key": "bad-" + host, "secret": "not base64 !"}
    )
    good = pyjwt.encode({"iss": "b64-" + host}, raw, algorithm="HS256")
    assert call(kong_node, host, f"/?jwt={good}").status == 200
    bad = pyjwt.encode({"iss": "bad-" + host}, "x" * 32, algorithm="HS256")
    r = call(kong_node, host, f"/?jwt={bad}")
    assert (r.status, r.json()) == (403, {"message": "Invalid key/secret"})
