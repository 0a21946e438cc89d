"""request-size-limiting, ip-restriction and bot-detection through a real node (SPEC §4.4)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from proxy_support import Node, Upstream, http, raw_exchange, running_node


def uniq() -> str:
    return f"tc-{uuid.uuid4().hex[:10]}.test"


def api_with(node: Node, upstream: Upstream, plugin: str, config: dict) -> str:  # type: ignore[type-arg]
    host = uniq()
    api = node.add_api(request_host=host, upstream_url=upstream.url)
    node.add_plugin(api, plugin, config)
    return host


# ------------------------------------------------------------------ request-size-limiting


def test_size_limit_413_and_pass(kong_node: Node, upstream: Upstream) -> None:
    """A body over allowed_payload_size MB is 413 with SPEC's message; one under it is proxied."""
    host = api_with(kong_node, upstream, "request-size-limiting", {"allowed_payload_size": 1})
    big = b"x" * (1024 * 1024 + 1)
    r = http("POST", kong_node.proxy + "/", big, {"Host": host})
    assert r.status == 413
    assert r.json() == {"message": "Request size limit exceeded"}
    r = http("POST", kong_node.proxy + "/", b"x" * (1024 * 1024), {"Host": host})
    assert r.status == 200


def test_size_limit_417_on_expect_continue_without_sending_the_body(
    kong_node: Node, upstream: Upstream
) -> None:
    """Expect: 100-continue with a too-large Content-Length is answered 417 without the body being sent."""
    host = api_with(kong_node, upstream, "request-size-limiting", {"allowed_payload_size": 1})
    head = (
        f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {50 * 1024 * 1024}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    reply = raw_exchange(kong_node.ports["proxy"], head, timeout=10)
    # the front-end may have sent an interim "100 Continue" first (twisted.web does)
    final = reply.split(b"HTTP/1.1 100 Continue\r\n\r\n", 1)[-1]
    assert final.startswith(b"HTTP/1.1 417"), reply[:200]
    assert final.endswith(b'{"message":"Request size limit exceeded"}')


def test_size_limit_chunked_body(kong_node: Node, upstream: Upstream) -> None:
    """A chunked body (no Content-Length) is measured and refused when too large."""
    host = api_with(kong_node, upstream, "request-size-limiting", {"allowed_payload_size": 0.001})
    chunk = b"y" * 2000
    data = (
        (
            f"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        + b"%x\r\n" % len(chunk)
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    reply = raw_exchange(kong_node.ports["proxy"], data, timeout=10)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


# ------------------------------------------------------------------ ip-restriction


def test_ip_restriction_blacklist_and_whitelist(kong_node: Node, upstream: Upstream) -> None:
    """A blacklisted CIDR containing the client is 403; a whitelist containing it passes."""
    black = api_with(kong_node, upstream, "ip-restriction", {"blacklist": "127.0.0.0/8,10.0.0.1"})
    r = http("GET", kong_node.proxy + "/", headers={"Host": black})
    assert r.status == 403
    assert r.json() == {"message": "Your IP address is not allowed"}
    white = api_with(kong_node, upstream, "ip-restriction", {"whitelist": "127.0.0.1"})
    assert http("GET", kong_node.proxy + "/", headers={"Host": white}).status == 200
    other = api_with(kong_node, upstream, "ip-restriction", {"whitelist": "10.0.0.0/8"})
    assert http("GET", kong_node.proxy + "/", headers={"Host": other}).status == 403


def test_ip_restriction_not_fooled_by_forwarded_for(kong_node: Node, upstream: Upstream) -> None:
    """X-Forwarded-For from an untrusted peer (trusted_ips empty) cannot pick a whitelisted address."""
    host = api_with(kong_node, upstream, "ip-restriction", {"whitelist": "10.9.9.9"})
    r = http("GET", kong_node.proxy + "/", headers={"Host": host, "X-Forwarded-For": "10.9.9.9"})
    assert r.status == 403


def test_ip_restriction_schema_messages(kong_node: Node, upstream: Upstream) -> None:
    """The Admin API refuses bad CIDRs and both/neither lists with SPEC's messages."""
    api = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
    r = http(
        "POST",
        f"{kong_node.admin}/apis/{api['id']}/plugins",
        b"name=ip-restriction&config.whitelist=10.0.0.300",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 400
    assert "cannot parse '10.0.0.300'" in r.json()["config.whitelist"]


# ------------------------------------------------------------------ bot-detection


def test_bot_detection(kong_node: Node, upstream: Upstream) -> None:
    """Known bots get an empty 403, browsers pass, the whitelist wins, two User-Agents are 400."""
    host = api_with(kong_node, upstream, "bot-detection", {"whitelist": "^Twitterbot"})
    url = kong_node.proxy + "/"
    r = http("GET", url, headers={"Host": host, "User-Agent": "Googlebot/2.1"})
    assert (r.status, r.body) == (403, b"")
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    assert http("GET", url, headers={"Host": host, "User-Agent": browser}).status == 200
    assert http("GET", url, headers={"Host": host, "User-Agent": "Twitterbot/1.0"}).status == 200
    data = (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: a\r\nUser-Agent: b\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    reply = raw_exchange(kong_node.ports["proxy"], data)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b'{"message":"Only one User-Agent header allowed"}' in reply


def test_bot_detection_blacklist(kong_node: Node, upstream: Upstream) -> None:
    """A blacklisted User-Agent regex blocks an otherwise allowed client."""
    host = api_with(kong_node, upstream, "bot-detection", {"blacklist": "^curl/"})
    r = http("GET", kong_node.proxy + "/", headers={"Host": host, "User-Agent": "curl/8.0"})
    assert r.status == 403


# ------------------------------------------------------------------ trusted_ips


@pytest.fixture(scope="module")
def trusting_node() -> Iterator[Node]:
    """A node that believes X-Forwarded-For from 127.0.0.1 (trusted_ips)."""
    with running_node({"KONG_TRUSTED_IPS": "127.0.0.1"}) as node:
        yield node


def test_trusted_proxy_forwarded_for_is_the_client(trusting_node: Node, upstream: Upstream) -> None:
    """Behind a trusted proxy, ip-restriction and rate-limiting see the X-Forwarded-For client."""
    host = api_with(trusting_node, upstream, "ip-restriction", {"whitelist": "10.9.9.0/24"})
    url = trusting_node.proxy + "/"
    assert http("GET", url, headers={"Host": host, "X-Forwarded-For": "10.9.9.9"}).status == 200
    assert http("GET", url, headers={"Host": host, "X-Forwarded-For": "10.8.8.8"}).status == 403
    assert http("GET", url, headers={"Host": host}).status == 403

    limited = api_with(
        trusting_node, upstream, "rate-limiting", {"minute": 1, "policy": "local", "limit_by": "ip"}
    )
    for client in ("1.1.1.1", "2.2.2.2"):
        r = http("GET", url, headers={"Host": limited, "X-Forwarded-For": client})
        assert r.status == 200, client
    r = http("GET", url, headers={"Host": limited, "X-Forwarded-For": "1.1.1.1"})
    assert r.status == 429


# ------------------------------------------------------------------ configuration messages

CONFIG_ERRORS = [
    (
        {"name": "rate-limiting"},
        {"config": "You need to set at least one limit: second, minute, hour, day, month, year"},
    ),
    (
        {"name": "rate-limiting", "config.second": 0},
        {"config": "Value for second must be greater than zero"},
    ),
    (
        {"name": "rate-limiting", "config.second": 10, "config.minute": 5},
        {"config": "The limit for minute cannot be lower than the limit for second"},
    ),
    (
        {"name": "rate-limiting", "config.second": 1, "config.policy": "redis"},
        {"config": "You need to specify a Redis host"},
    ),
    (
        {"name": "response-ratelimiting"},
        {"config": "You need to set at least one limit name"},
    ),
    (
        {"name": "response-ratelimiting", "config.limits.v.hour": 1, "config.limits.v.day": -1},
        {"config": "Value for day must be greater than zero"},
    ),
    (
        {"name": "ip-restriction"},
        {"config": "you must set at least a whitelist or blacklist"},
    ),
    (
        {"name": "ip-restriction", "config.whitelist": "1.2.3.4", "config.blacklist": "1.2.3.5"},
        {"config": "you cannot set both a whitelist and a blacklist"},
    ),
    (
        {"name": "ip-restriction", "config.blacklist": "1.2.3.4/99"},
        {"config.blacklist": "cannot parse '1.2.3.4/99': Invalid prefix: /99"},
    ),
    (
        {"name": "bot-detection", "config.blacklist": "(["},
        {"config.blacklist": "value '([' is not a valid regex"},
    ),
]


@pytest.mark.parametrize(("fields", "expected"), CONFIG_ERRORS)
def test_config_messages(
    kong_node: Node, upstream: Upstream, fields: dict[str, object], expected: dict[str, str]
) -> None:
    """The Admin API refuses bad configurations of these plugins with SPEC's messages."""
    import json

    api = kong_node.add_api(request_host=uniq(), upstream_url=upstream.url)
    r = http(
        "POST",
        f"{kong_node.admin}/apis/{api['id']}/plugins",
        json.dumps(fields).encode(),
        {"Content-Type": "application/json"},
    )
    assert (r.status, r.json()) == (400, expected)
