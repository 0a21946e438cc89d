"""key-auth, basic-auth, hmac-auth, acl and the anonymous option through a real node (SPEC §4.2, §4.4).

Every status, message and header of SPEC for these plugins, as a client and the
upstream see them; credentials changed through the Admin API take effect on the
next request; a consumer-specific request-transformer applies after authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from email.utils import formatdate
from typing import Any

from proxy_support import Node, Upstream, http, raw_exchange


def uniq(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def upstream_headers(r: Any) -> dict[str, str]:
    """The request headers the echo upstream received (names lower-cased)."""
    return {name.lower(): value for name, value in r.json()["headers"]}


def api_with(node: Node, upstream: Upstream, *plugins: tuple[str, dict[str, Any]]) -> str:
    """A new API (its host returned) carrying ``plugins``."""
    host = uniq() + ".auth.test"
    api = node.add_api(request_host=host, upstream_url=upstream.url)
    for name, config in plugins:
        node.add_plugin(api, name, config)
    return host


def consumer(node: Node, **fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = node.admin_call(
        "POST", "/consumers", {"username": uniq("u"), **fields}
    )
    return result


def get(node: Node, host: str, path: str = "/", **headers: str) -> Any:
    return http("GET", node.proxy + path, headers={"Host": host, **headers})


def test_key_auth(kong_node: Node, upstream: Upstream) -> None:
    """key-auth: 401 without key (+realm), 403 wrong key, duplicate 401, headers on success."""
    host = api_with(kong_node, upstream, ("key-auth", {}))
    bob = consumer(kong_node, custom_id="cust-1")
    kong_node.admin_call("POST", f"/consumers/{bob['id']}/key-auth", {"key": "bob-key"})

    r = get(kong_node, host)
    assert r.status == 401
    assert r.json() == {"message": "No API key found in headers or querystring"}
    assert r.header("WWW-Authenticate") == 'Key realm="kong"'
    assert r.header("Content-Type") == "application/json; charset=utf-8"

    r = get(kong_node, host, apikey="wrong")
    assert (r.status, r.json()) == (403, {"message": "Invalid authentication credentials"})

    r = get(kong_node, host, "/?apikey=a&apikey=b")
    assert (r.status, r.json()) == (401, {"message": "Duplicate API key found"})

    r = get(kong_node, host, "/?apikey=bob-key", **{"X-Consumer-Custom-ID": "forged"})
    assert r.status == 200, r.body
    seen = upstream_headers(r)
    assert seen["x-consumer-id"] == bob["id"]
    assert seen["x-consumer-custom-id"] == "cust-1"
    assert seen["x-consumer-username"] == bob["username"]
    assert "apikey=bob-key" in r.json()["query"]


def test_key_auth_hide_credentials_and_invalidation(kong_node: Node, upstream: Upstream) -> None:
    """hide_credentials strips the key; a deleted or changed key fails on the very next request."""
    host = api_with(
        kong_node, upstream, ("key-auth", {"key_names": "x-key,k", "hide_credentials": True})
    )
    bob = consumer(kong_node)
    cred = kong_node.admin_call("POST", f"/consumers/{bob['id']}/key-auth", {"key": uniq("k")})
    r = get(kong_node, host, f"/?k={cred['key']}&keep=1")
    assert r.status == 200
    assert r.json()["query"] == "keep=1"
    r = get(kong_node, host, **{"X-Key": cred["key"]})
    assert r.status == 200 and "x-key" not in upstream_headers(r)

    kong_node.admin_call(
        "PATCH", f"/consumers/{bob['id']}/key-auth/{cred['id']}", {"key": "renamed-" + cred["key"]}
    )
    assert get(kong_node, host, **{"X-Key": cred["key"]}).status == 403
    assert get(kong_node, host, **{"X-Key": "renamed-" + cred["key"]}).status == 200
    kong_node.admin_call("DELETE", f"/consumers/{bob['id']}/key-auth/{cred['id']}")
    assert get(kong_node, host, **{"X-Key": "renamed-" + cred["key"]}).status == 403


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth(kong_node: Node, upstream: Upstream) -> None:
    """basic-auth: 401 + Basic realm, 403 on a bad password, X-Credential-Username on success."""
    host = api_with(kong_node, upstream, ("basic-auth", {"hide_credentials": True}))
    bob = consumer(kong_node)
    user = uniq("user")
    cred = kong_node.admin_call(
        "POST", f"/consumers/{bob['id']}/basic-auth", {"username": user, "password": "pw:1"}
    )
    assert cred["password"].startswith("scrypt$")

    r = get(kong_node, host)
    assert (r.status, r.json()) == (401, {"message": "Unauthorized"})
    assert r.header("WWW-Authenticate") == 'Basic realm="kong"'
    r = get(kong_node, host, Authorization=basic(user, "nope"))
    assert (r.status, r.json()) == (403, {"message": "Invalid authentication credentials"})

    r = get(kong_node, host, Authorization=basic(user, "pw:1"))
    assert r.status == 200, r.body
    seen = upstream_headers(r)
    assert seen["x-credential-username"] == user
    assert seen["x-consumer-id"] == bob["id"]
    assert "authorization" not in seen

    r = get(kong_node, host, **{"Proxy-Authorization": basic(user, "pw:1")})
    assert r.status == 200

    kong_node.admin_call(
        "PATCH", f"/consumers/{bob['id']}/basic-auth/{cred['id']}", {"password": "new"}
    )
    assert get(kong_node, host, Authorization=basic(user, "pw:1")).status == 403
    assert get(kong_node, host, Authorization=basic(user, "new")).status == 200


def hmac_header(user: str, secret: str, date: str, line: str) -> str:
    text = f"date: {date}\n{line}"
    sig = base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest())
    return (
        f'hmac username="{user}", algorithm="hmac-sha1", headers="date request-line", '
        f'signature="{sig.decode()}"'
    )


def test_hmac_auth(kong_node: Node, upstream: Upstream) -> None:
    """hmac-auth: 401 bare, the date message, cannot be verified, does not match, success."""
    host = api_with(kong_node, upstream, ("hmac-auth", {}))
    bob = consumer(kong_node)
    user = uniq("hm")
    kong_node.admin_call(
        "POST", f"/consumers/{bob['id']}/hmac-auth", {"username": user, "secret": "s3"}
    )
    date = formatdate(usegmt=True)

    r = get(kong_node, host, Date=date)
    assert (r.status, r.json()) == (401, {"message": "Unauthorized"})
    assert r.header("WWW-Authenticate") is None

    r = get(kong_node, host, Authorization=hmac_header(user, "s3", date, "x"))
    assert r.status == 403
    assert r.json() == {
        "message": "HMAC signature cannot be verified, a valid date or x-date header is "
        "required for HMAC Authentication"
    }
    r = get(kong_node, host, Authorization="hmac garbage", Date=date)
    assert (r.status, r.json()) == (403, {"message": "HMAC signature cannot be verified"})
    r = get(kong_node, host, Authorization=hmac_header(user, "wrong", date, "x"), Date=date)
    assert (r.status, r.json()) == (403, {"message": "HMAC signature does not match"})

    line = "GET /signed?a=1 HTTP/1.1"
    r = get(
        kong_node, host, "/signed?a=1", Authorization=hmac_header(user, "s3", date, line), Date=date
    )
    assert r.status == 200, r.body
    assert upstream_headers(r)["x-credential-username"] == user

    # request-line is the line the client sent, HTTP/1.0 included
    line = "GET /signed10 HTTP/1.0"
    raw = raw_exchange(
        kong_node.ports["proxy"],
        (
            f"{line}\r\nHost: {host}\r\nDate: {date}\r\n"
            f"Authorization: {hmac_header(user, 's3', date, line)}\r\n\r\n"
        ).encode(),
    )
    assert raw.split(b" ", 2)[1] == b"200", raw[:200]
    signed11 = hmac_header(user, "s3", date, "GET /signed10 HTTP/1.1")
    raw = raw_exchange(
        kong_node.ports["proxy"],
        f"{line}\r\nHost: {host}\r\nDate: {date}\r\nAuthorization: {signed11}\r\n\r\n".encode(),
    )
    assert raw.split(b" ", 2)[1] == b"403", raw[:200]


def test_acl(kong_node: Node, upstream: Upstream) -> None:
    """acl: 403 without an auth plugin, 403 outside the whitelist, X-Consumer-Groups inside it."""
    lone = api_with(kong_node, upstream, ("acl", {"whitelist": "admin"}))
    r = get(kong_node, lone)
    assert r.status == 403
    assert r.json() == {
        "message": "Cannot identify the consumer, add an authentication plugin to use the ACL plugin"
    }

    host = api_with(kong_node, upstream, ("key-auth", {}), ("acl", {"whitelist": "admin"}))
    bob = consumer(kong_node)
    key = uniq("k")
    kong_node.admin_call("POST", f"/consumers/{bob['id']}/key-auth", {"key": key})
    r = get(kong_node, host, apikey=key)
    assert (r.status, r.json()) == (403, {"message": "You cannot consume this service"})

    group = kong_node.admin_call("POST", f"/consumers/{bob['id']}/acls", {"group": "admin"})
    kong_node.admin_call("POST", f"/consumers/{bob['id']}/acls", {"group": "dev"})
    r = get(kong_node, host, apikey=key)
    assert r.status == 200
    assert upstream_headers(r)["x-consumer-groups"] in ("admin, dev", "dev, admin")

    kong_node.admin_call("DELETE", f"/consumers/{bob['id']}/acls/{group['id']}")
    assert get(kong_node, host, apikey=key).status == 403


def test_anonymous_or(kong_node: Node, upstream: Upstream) -> None:
    """key-auth OR basic-auth with anonymous: either credential works, none gives the anonymous consumer."""
    guest = consumer(kong_node)
    host = api_with(
        kong_node,
        upstream,
        ("key-auth", {"anonymous": guest["id"]}),
        ("basic-auth", {"anonymous": guest["id"]}),
        ("acl", {"blacklist": "banned"}),
    )
    bob = consumer(kong_node)
    key = uniq("k")
    kong_node.admin_call("POST", f"/consumers/{bob['id']}/key-auth", {"key": key})
    alice = consumer(kong_node)
    kong_node.admin_call(
        "POST",
        f"/consumers/{alice['id']}/basic-auth",
        {"username": alice["username"], "password": "p"},
    )

    seen = upstream_headers(get(kong_node, host, apikey=key))
    assert seen["x-consumer-id"] == bob["id"] and "x-anonymous-consumer" not in seen
    seen = upstream_headers(get(kong_node, host, Authorization=basic(alice["username"], "p")))
    assert seen["x-consumer-id"] == alice["id"]
    r = get(kong_node, host, **{"X-Consumer-ID": bob["id"]})
    assert r.status == 200
    seen = upstream_headers(r)
    assert seen["x-consumer-id"] == guest["id"]
    assert seen["x-anonymous-consumer"] == "true"

    kong_node.admin_call("POST", f"/consumers/{guest['id']}/acls", {"group": "banned"})
    assert get(kong_node, host).status == 403
    assert get(kong_node, host, apikey=key).status == 200


def test_consumer_specific_config_applies_after_auth(kong_node: Node, upstream: Upstream) -> None:
    """A request-transformer configured for one consumer applies once key-auth identified them."""
    host = uniq() + ".auth.test"
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(api, "key-auth", {})
    kong_node.add_plugin(api, "request-transformer", {"add.headers": "x-who:everyone"})
    bob, alice = consumer(kong_node), consumer(kong_node)
    for c, key in ((bob, "bk-" + host), (alice, "ak-" + host)):
        kong_node.admin_call("POST", f"/consumers/{c['id']}/key-auth", {"key": key})
    kong_node.admin_call(
        "POST",
        f"/apis/{api['id']}/plugins",
        {
            "name": "request-transformer",
            "consumer_id": bob["id"],
            "config.add.headers": "x-who:bob",
        },
    )
    assert upstream_headers(get(kong_node, host, apikey="bk-" + host))["x-who"] == "bob"
    assert upstream_headers(get(kong_node, host, apikey="ak-" + host))["x-who"] == "everyone"
