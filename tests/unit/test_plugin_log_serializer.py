"""The basic log serializer (SPEC §4.6)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import (
    MAX_LOGGED_BODY,
    RESPONSE_BODY_KEY,
    basic_serialize,
    capture_response_chunk,
    encode,
    headers_table,
    query_table,
)
from tests.fakes import FakeContext, FakeHeaders

API = {"id": "api-1", "name": "example", "upstream_url": "http://up", "request_host": "ex.com"}
API_ROW = {**API, "request_path": None}


def proxied_context(**extra: Any) -> FakeContext:
    """A FakeContext carrying what the proxy's ProxyContext adds for the log phase."""
    ctx = FakeContext(
        api=API_ROW,
        method="POST",
        path="/users",
        headers=[("Host", "Ex.com:8000"), ("X-A", "1"), ("x-a", "2"), ("Content-Length", "5")],
        query=[("q", "x"), ("flag", None), ("q", "y")],
        client_ip="10.0.0.9",
    )
    ctx.request_uri = "/users?q=x&flag&q=y"  # type: ignore[attr-defined]
    ctx.request_size = 5  # type: ignore[attr-defined]
    ctx.response_size = 11  # type: ignore[attr-defined]
    ctx.proxy_latency = 3  # type: ignore[attr-defined]
    ctx.upstream_latency = 20  # type: ignore[attr-defined]
    ctx.request_latency = 27  # type: ignore[attr-defined]
    ctx.upstream_url = "http://up/users"  # type: ignore[attr-defined]
    ctx.status = 201
    ctx.response_headers = FakeHeaders([("Content-Type", "application/json"), ("Via", "kong")])
    for k, v in extra.items():
        setattr(ctx, k, v)
    return ctx


class SerializerTests(SynchronousTestCase):
    def test_every_field(self) -> None:
        """Every field of SPEC's basic serializer, ngx-shaped headers and querystring, no NULL api fields."""
        ctx = proxied_context()
        ctx.credential = {"id": "cred-1", "consumer_id": "cons-1", "key": "secret"}
        msg = basic_serialize(ctx)
        req_head = (
            len("POST /users?q=x&flag&q=y HTTP/1.1")
            + 2
            + sum(len(k) + len(v) + 4 for k, v in ctx.headers.items())
            + 2
        )
        resp_head = (
            len("HTTP/1.1 201 Created")
            + 2
            + sum(len(k) + len(v) + 4 for k, v in ctx.response_headers.items())
            + 2
        )
        self.assertEqual(
            msg,
            {
                "request": {
                    "uri": "/users?q=x&flag&q=y",
                    "request_uri": "http://ex.com:8000/users?q=x&flag&q=y",
                    "querystring": {"q": ["x", "y"], "flag": True},
                    "method": "POST",
                    "headers": {"host": "Ex.com:8000", "x-a": ["1", "2"], "content-length": "5"},
                    "size": req_head + 5,
                },
                "response": {
                    "status": 201,
                    "headers": {"content-type": "application/json", "via": "kong"},
                    "size": resp_head + 11,
                },
                "latencies": {"kong": 7, "proxy": 20, "request": 27},
                "authenticated_entity": {"id": "cred-1", "consumer_id": "cons-1"},
                "api": API,
                "client_ip": "10.0.0.9",
                "started_at": 1_480_000_000_250,
            },
        )

    def test_rejected_request_has_proxy_minus_one(self) -> None:
        """A request answered by Kong (never proxied) reports proxy latency -1 and no entity."""
        ctx = proxied_context(upstream_url=None, upstream_latency=None, proxy_latency=2)
        msg = basic_serialize(ctx)
        self.assertEqual(msg["latencies"], {"kong": 2, "proxy": -1, "request": 27})
        self.assertNotIn("authenticated_entity", msg)

    def test_plain_context_gets_defaults(self) -> None:
        """A context without the proxy's extras still serializes (sizes of heads, latencies 0)."""
        msg = basic_serialize(FakeContext(api=API, path="/p"))
        self.assertEqual(msg["request"]["uri"], "/p")
        self.assertEqual(msg["latencies"], {"kong": 0, "proxy": -1, "request": 0})

    def test_tables(self) -> None:
        """headers_table lower-cases and groups; query_table turns flags into true."""
        self.assertEqual(
            headers_table([("A", "1"), ("a", "2"), ("a", "3")]), {"a": ["1", "2", "3"]}
        )
        self.assertEqual(query_table([("f", None), ("f", "v")]), {"f": [True, "v"]})

    def test_encode_is_compact_utf8(self) -> None:
        """JSON is compact and keeps non-ASCII as UTF-8."""
        self.assertEqual(encode({"a": [1, "é"]}), '{"a":[1,"é"]}'.encode())

    def test_response_capture_is_capped(self) -> None:
        """Captured response bodies stop (None) once over the cap."""
        ctx = FakeContext()
        capture_response_chunk(ctx, b"ab")
        capture_response_chunk(ctx, b"cd")
        self.assertEqual(ctx.shared[RESPONSE_BODY_KEY], b"abcd")
        capture_response_chunk(ctx, b"x" * MAX_LOGGED_BODY)
        self.assertIsNone(ctx.shared[RESPONSE_BODY_KEY])
        capture_response_chunk(ctx, b"more")
        self.assertIsNone(ctx.shared[RESPONSE_BODY_KEY])
