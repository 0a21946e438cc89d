"""The basic log serializer (SPEC §4.6)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins import log_serializer, log_tables, row_json
from kongtx.plugins.body_logging import MAX_LOGGED_BODY, RESPONSE_BODY_KEY, capture_response_chunk
from kongtx.plugins.log_serializer import (
    API_JSON,
    ENTITY_JSON,
    basic_json,
    basic_serialize,
    encode,
    headers_table,
    query_table,
)
from kongtx.plugins.row_json import RowJson
from kongtx.store.rows import freeze
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


def frozen_row(row: dict[str, Any]) -> Any:
    """``row`` as the router holds it: a FrozenRow."""
    frozen = freeze(dict(row))
    assert not isinstance(frozen, dict)
    return frozen


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


def reference_head_size(first_line: str, headers: list[tuple[str, str]]) -> int:
    """The head size as first written: every name and value encoded."""
    size = len(first_line.encode("latin-1", "replace")) + 2
    for name, value in headers:
        size += len(name.encode("latin-1", "replace")) + len(value.encode("utf-8")) + 4
    return size + 2


class BasicJsonTests(SynchronousTestCase):
    """basic_json: the bytes of encode(basic_serialize(ctx)), written with less work."""

    def assertSameBytes(self, ctx: Any) -> None:
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))

    def test_same_bytes_as_encoding_the_message(self) -> None:
        """Proxied, authenticated, rejected and plain requests give the message's exact bytes."""
        ctx = proxied_context()
        self.assertSameBytes(ctx)
        ctx.credential = {"id": "cred-1", "consumer_id": "cons-1", "key": "secret"}
        self.assertSameBytes(ctx)
        self.assertSameBytes(proxied_context(upstream_url=None, upstream_latency=None))
        self.assertSameBytes(FakeContext(api=API, path="/p"))

    def test_escaping_and_utf8(self) -> None:
        """Quotes, control characters and non-ASCII are escaped exactly as json does, kept UTF-8."""
        ctx = proxied_context(client_ip='1"\\2\n')
        ctx.headers.add("X-Ünï", 'vé "q" \x01 \u2028 😀')
        ctx.response_headers.add("X-Tab", "a\tb")
        ctx.query.append(("ké\u00ff", "v\\"))
        ctx.api = frozen_row({**API, "name": 'ex\u00e9"mple'})
        ctx.credential = {"id": "c\u00e9", "consumer_id": None}
        self.assertSameBytes(ctx)
        self.assertIn("é".encode(), basic_json(ctx))
        json.loads(basic_json(ctx))

    def test_default_str_kept(self) -> None:
        """A value json cannot encode is written as its str(), as default=str did."""
        ctx = proxied_context(client_ip=Decimal("1.5"))
        ctx.credential = {"id": Decimal("2"), "consumer_id": ["x", 1]}
        ctx.api = {**API, "created_at": Decimal("3")}
        self.assertSameBytes(ctx)
        self.assertEqual(json.loads(basic_json(ctx))["client_ip"], "1.5")

    def test_repeated_names_are_lists(self) -> None:
        """A repeated header or query key becomes a list in first-seen order, as ngx's tables."""
        ctx = proxied_context()
        ctx.response_headers.add("VIA", "again")
        msg = json.loads(basic_json(ctx))
        self.assertEqual(msg["response"]["headers"]["via"], ["kong", "again"])
        self.assertEqual(msg["request"]["querystring"], {"q": ["x", "y"], "flag": True})
        self.assertSameBytes(ctx)

    def test_head_size_counts_encoded_bytes(self) -> None:
        """Head sizes count latin-1 names (one byte a character) and UTF-8 values."""
        from kongtx.plugins.log_serializer import _head_size

        for line, headers in [
            ("GET / HTTP/1.1", []),
            ("GET /é HTTP/1.1", [("Host", "a"), ("X-é", "é"), ("X-€", "€😀")]),
            ("HTTP/1.1 200 OK", [("A", "b" * 300), ("c", "")]),
        ]:
            self.assertEqual(_head_size(line, headers), reference_head_size(line, headers))


class HeaderKeyTests(SynchronousTestCase):
    """Each header name's JSON key, made once and kept in a bounded table; values are
    escaped on every request; a name repeated in any spelling makes a list."""

    def setUp(self) -> None:
        log_tables._forget()

    def test_kept_names_give_the_same_bytes(self) -> None:
        """A second request with the same headers (keys from the table) and one with a
        changed value still give the message's exact bytes."""
        ctx = proxied_context()
        first = basic_json(ctx)
        self.assertIn("Via", log_tables._KEYS)
        self.assertEqual(basic_json(ctx), first)
        self.assertEqual(first, encode(basic_serialize(ctx)))
        ctx.response_headers.set("Via", 'kong \u00e9"\n')
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
        self.assertEqual(
            json.loads(basic_json(ctx))["response"]["headers"]["via"], 'kong \u00e9"\n'
        )

    def test_spellings_share_a_key_and_repeat_as_a_list(self) -> None:
        """``X-A`` and ``x-a`` are one name: sent both ways, the value is a list, as
        json.dumps of ngx's table gives; the next request, without the repeat, is an
        object again."""
        ctx = proxied_context()
        ctx.response_headers.add("X-A", "1")
        basic_json(ctx)
        ctx.response_headers.add("x-a", "2")
        repeated = basic_json(ctx)
        self.assertEqual(repeated, encode(basic_serialize(ctx)))
        self.assertEqual(json.loads(repeated)["response"]["headers"]["x-a"], ["1", "2"])
        self.assertIs(log_tables._KEYS["X-A"], log_tables._KEYS["x-a"])
        ctx.response_headers.remove("x-a")
        ctx.response_headers.add("X-A", "3")
        self.assertEqual(json.loads(basic_json(ctx))["response"]["headers"]["x-a"], "3")

    def test_bounded(self) -> None:
        """The table is cleared when full; every message stays exact."""
        ctx = proxied_context()
        for i in range(log_tables._KEYS_LIMIT + 10):
            ctx.response_headers = FakeHeaders([(f"X-N{i}", str(i)), ("Via", "kong")])
            basic_json(ctx)
            self.assertLessEqual(len(log_tables._KEYS), log_tables._KEYS_LIMIT)
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))

    def test_full_table_cleared_between_calls_only(self) -> None:
        """The table is cleared before a call, never during one: a name repeated after a
        new name that finds the table full is still seen as repeated (a list); the
        members kept in all stay bounded too."""
        self.patch(log_tables, "_KEYS_LIMIT", 3)
        self.patch(log_tables, "_MEMBERS_LIMIT", 5)
        ctx = proxied_context()
        ctx.response_headers = FakeHeaders([("X-A", "1"), ("B", "b"), ("C", "c")])
        basic_json(ctx)
        ctx.response_headers = FakeHeaders([("X-A", "1"), ("New", "n"), ("x-a", "2")])
        self.assertEqual(json.loads(basic_json(ctx))["response"]["headers"]["x-a"], ["1", "2"])
        for i in range(20):
            ctx.response_headers = FakeHeaders([("X-A", str(i)), ("Via", "kong")])
            self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
            self.assertLessEqual(log_tables._CALLS.members, 5 + 2 + 3)

    def test_no_headers(self) -> None:
        """An empty headers object is ``{}`` of zero bytes."""
        ctx = proxied_context()
        ctx.response_headers = FakeHeaders([])
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
        self.assertEqual(json.loads(basic_json(ctx))["response"]["headers"], {})


class RowJsonTests(SynchronousTestCase):
    """The api row's and the credential's JSON: encoded once per immutable row, forgotten
    with the row."""

    def setUp(self) -> None:
        API_JSON.entries.clear()
        ENTITY_JSON.entries.clear()

    def test_frozen_row_encoded_once(self) -> None:
        """A FrozenRow's JSON is kept by identity; an equal new row is encoded again."""
        row = frozen_row(API_ROW)
        credential = frozen_row({"id": "cred-1", "consumer_id": "cons-1", "key": "k"})
        ctx = proxied_context(api=row)
        ctx.credential = credential
        first = basic_json(ctx)
        self.assertEqual(list(API_JSON.entries), [id(row)])
        self.assertEqual(list(ENTITY_JSON.entries), [id(credential)])
        self.assertEqual(basic_json(ctx), first)
        self.assertEqual(json.loads(first), basic_serialize(ctx))
        ctx.api = frozen_row({**API_ROW, "name": "renamed"})
        ctx.credential = frozen_row({"id": "cred-2", "consumer_id": "cons-1", "key": "k"})
        message = json.loads(basic_json(ctx))
        self.assertEqual(message["api"]["name"], "renamed")
        self.assertEqual(message["authenticated_entity"]["id"], "cred-2")

    def test_entry_dies_with_its_row(self) -> None:
        """Once nothing else holds a row (an API changed: the router made new rows), the
        next new row sweeps its entry out."""
        old = frozen_row(API_ROW)
        ctx = proxied_context(api=old)
        basic_json(ctx)
        old_id = id(old)
        new = frozen_row({**API_ROW, "name": "new"})
        ctx.api = new
        basic_json(ctx)
        self.assertIn(old_id, API_JSON.entries)  # still held here: kept
        del old
        newer = frozen_row({**API_ROW, "name": "newer"})
        ctx.api = newer
        basic_json(ctx)
        self.assertNotIn(old_id, API_JSON.entries)
        self.assertEqual(set(API_JSON.entries), {id(new), id(newer)})

    def test_large_table_swept_every_sixteenth(self) -> None:
        """With many rows, a sweep runs once per len/16 misses, and still drops the dead."""
        sweeps: list[int] = []
        counts = row_json._counts

        def counting(table: Any) -> dict[int, int]:
            sweeps.append(len(table))
            return counts(table)

        self.patch(row_json, "_counts", counting)
        table = RowJson(str, limit=1000)
        live = [frozen_row({"id": str(i)}) for i in range(160)]
        for row in live:
            table.json(row)
        del live[:10], row
        sweeps.clear()
        for i in range(20):
            table.json(frozen_row({"id": f"new{i}"}))  # held by nothing: dead at once
        self.assertIn(len(sweeps), (2, 3))  # every 10 misses or so, not 20 times
        kept = {row["id"] for row, _ in table.entries.values()}
        self.assertFalse(kept & {str(i) for i in range(10)})
        self.assertTrue({row["id"] for row in live} <= kept)

    def test_bounded(self) -> None:
        """The table never holds more than its limit."""
        rows = [frozen_row({**API_ROW, "name": f"a{i}"}) for i in range(API_JSON.limit + 5)]
        for row in rows:
            basic_json(proxied_context(api=row))
            self.assertLessEqual(len(API_JSON.entries), API_JSON.limit)

    def test_mutable_rows_not_cached(self) -> None:
        """A dict row (mutable) is encoded every time: a change shows at once."""
        row = dict(API_ROW)
        ctx = proxied_context(api=row)
        ctx.credential = {"id": "cred-1", "consumer_id": "cons-1"}
        basic_json(ctx)
        row["name"] = "changed"
        ctx.credential["id"] = "cred-9"
        message = json.loads(basic_json(ctx))
        self.assertEqual(message["api"]["name"], "changed")
        self.assertEqual(message["authenticated_entity"]["id"], "cred-9")
        self.assertEqual((API_JSON.entries, ENTITY_JSON.entries), ({}, {}))


class EncodeTests(SynchronousTestCase):
    """encode: json.dumps(compact, ensure_ascii=False, default=str) with the encoder built once."""

    VALUES: list[Any] = [
        {"a": [1, 2.5, float("nan"), float("inf"), None, True, False], "é": '\u2028\x00"\\'},
        {1: "int key", 2.5: "float key", None: "null key", False: "bool key"},
        [Decimal("1.10"), {"nested": {"deep": [set()]}}],
        "just a string",
        12,
    ]

    def test_same_as_json_dumps(self) -> None:
        """Every kind of value encodes as json.dumps with the serializer's options did."""
        for value in self.VALUES:
            expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
            self.assertEqual(encode(value), expected.encode("utf-8"))

    def test_without_the_c_encoder(self) -> None:
        """Where json has no C accelerator, the pure encoder gives the same bytes."""
        with_c = [encode(value) for value in self.VALUES]
        self.patch(log_tables, "_ITERENCODE", None)
        self.assertEqual([encode(value) for value in self.VALUES], with_c)


class ProxyContextTests(SynchronousTestCase):
    """The proxy's own context is serialized by its registered function (fields read
    natively): the same bytes as the generic reading of any context."""

    def context(self, host: str | None, uri: str = "/p?a=1&b") -> Any:
        from kongtx.proxy.context import IncomingRequest, ProxyContext
        from kongtx.proxy.headers import HeaderList
        from kongtx.router import Match

        api = frozen_row(API_ROW)
        headers = HeaderList([("Host", host)] if host is not None else [])
        headers.add("Accept", "*/*")
        incoming = IncomingRequest(
            "GET", uri, headers, "10.0.0.1", server_addr="10.0.0.2", server_port=8000
        )
        path, _, raw = uri.partition("?")
        ctx = ProxyContext(api, Match(api, "path", None), incoming, "10.0.0.9", path, raw, 1.5)
        ctx.status = 200
        ctx.response_headers.add("Content-Type", "text/plain")
        ctx.response_size = 12
        ctx.request_latency = 7
        ctx.proxy_latency = 2
        return ctx

    def test_same_bytes_as_the_generic_reading(self) -> None:
        from kongtx.proxy.context import ProxyContext

        self.assertIn(ProxyContext, log_serializer.CONTEXT_JSON)
        for host in ("Example.COM:8000", "[::1]:80", "", None):
            ctx = self.context(host)
            self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
        ctx = self.context("example.com", uri="")
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
        ctx.upstream_url = "http://up/"
        ctx.upstream_latency = 3
        ctx.credential = frozen_row({"id": "cred-1", "consumer_id": "cons-1", "key": "k"})
        ctx.headers.set("X-Consumer-ID", "cons-1")
        message = json.loads(basic_json(ctx))
        self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
        self.assertEqual(message["latencies"], {"kong": 4, "proxy": 3, "request": 7})
        self.assertEqual(message["request"]["headers"]["x-consumer-id"], "cons-1")
        self.assertEqual(message["request"]["request_uri"], "http://example.com:8000")
