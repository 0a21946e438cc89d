"""The log serializer's memory of the last headers and query args (issue 8): the JSON
of a headers list or query reusing the last one's must be the bytes a fresh
serialization gives, whatever changed between two calls."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_json, basic_serialize, encode
from kongtx.plugins.log_tables import (
    LastHeaders,
    LastQuery,
    dumps,
    headers_json,
    headers_json_like,
    ngx_headers,
    ngx_query,
    query_json_like,
)
from tests.unit.test_plugin_log_serializer import API_ROW, frozen_row, proxied_context

Items = list[tuple[str, str, str]]


def triples(pairs: list[tuple[str, str]]) -> Items:
    return [(name.lower(), name, value) for name, value in pairs]


BASE = [("Content-Type", "text/plain"), ("Date", "Sun, 29 Nov 2026 14:00:00 GMT"), ("Via", "k")]


class LastHeadersTests(SynchronousTestCase):
    def check(self, last: LastHeaders, pairs: list[tuple[str, str]]) -> None:
        items = triples(pairs)
        fresh = headers_json(list(items))
        self.assertEqual(headers_json_like(items, last), fresh)
        self.assertEqual(fresh[0], dumps(ngx_headers(pairs)))

    def test_sequences(self) -> None:
        """Each list after the one before: repeated, a changed value (first, middle,
        last, non-ASCII), reordered, a renamed, added and removed header, a repeated
        name (a list) and back, empty."""
        sequence = [
            BASE,
            BASE,
            [("Content-Type", "text/html"), *BASE[1:]],
            [BASE[0], ("Date", "Sun, 29 Nov 2026 14:00:01 GMT"), BASE[2]],
            [*BASE[:2], ("Via", "kong é")],
            [*BASE[:2], ("Via", "kong é")],
            [BASE[2], BASE[0], BASE[1]],
            [("content-type", "text/plain"), *BASE[1:]],
            [*BASE, ("X-RateLimit-Remaining-hour", "99")],
            [*BASE, ("X-RateLimit-Remaining-hour", "98")],
            [*BASE, ("X-RateLimit-Remaining-hour", "9" * 300)],
            [*BASE, ("via", "second")],
            [*BASE, ("via", "third")],
            BASE[:2],
            [],
            [],
            BASE,
        ]
        last = LastHeaders()
        for pairs in sequence:
            self.check(last, pairs)

    def test_mutated_input_list(self) -> None:
        """The caller's list changed in place afterwards (a HeaderList reused): the
        memory kept its own copy."""
        last = LastHeaders()
        items = triples(BASE)
        headers_json_like(items, last)
        items[1] = ("date", "Date", "changed")
        self.assertEqual(headers_json_like(triples(BASE), last), headers_json(triples(BASE)))

    def test_many_values(self) -> None:
        """A value changing on every call (a counter) beyond the kept values."""
        last = LastHeaders()
        for i in range(300):
            self.check(last, [("Server", "s"), ("X-Count", str(i)), ("Date", str(i // 7))])


class LastQueryTests(SynchronousTestCase):
    def test_sequences(self) -> None:
        last = LastQuery()
        for args in (
            [("apikey", "k")],
            [("apikey", "k")],
            [("apikey", "other")],
            [("apikey", None)],
            [("a", "1"), ("a", "2")],
            [("a", "1"), ("a", "2")],
            [],
        ):
            self.assertEqual(query_json_like(list(args), last), dumps(ngx_query(args)))

    def test_mutated_input_list(self) -> None:
        last = LastQuery()
        args: list[tuple[str, str | None]] = [("apikey", "k")]
        query_json_like(args, last)
        args.append(("b", "2"))
        self.assertEqual(query_json_like([("apikey", "k")], last), '{"apikey":"k"}')


class LastMessageTests(SynchronousTestCase):
    def test_rows_uri_and_client_changing(self) -> None:
        """basic_json's message stays encode(basic_serialize) while the API row, the
        credential, the URI, the Host and the client address change between requests
        (frozen rows and plain dicts alike)."""
        api = frozen_row(API_ROW)
        other_api = frozen_row({**API_ROW, "name": "other"})
        credential = frozen_row({"id": "c1", "consumer_id": "u1"})
        other_credential = frozen_row({"id": "c2", "consumer_id": "u2"})
        steps: list[dict[str, Any]] = [
            {"api": api, "credential": credential},
            {"api": api, "credential": credential},
            {"api": other_api, "credential": credential},
            {"api": other_api, "credential": other_credential},
            {"api": other_api, "credential": None},
            {"api": dict(API_ROW), "credential": {"id": "d", "consumer_id": "x"}},
            {"api": api, "credential": credential, "request_uri": "/other?q=1"},
            {"api": api, "credential": credential, "client_ip": "10.0.0.10"},
            {"api": api, "credential": credential, "client_ip": "10.0.0.10"},
            {"api": api, "credential": credential, "server_port": 8443},
        ]
        for extra in steps:
            ctx = proxied_context(**extra)
            self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))

    def test_proxy_context_origins(self) -> None:
        """The proxy's context: the origin (scheme, $host or the server address, port)
        follows each request's own, remembered or not."""
        from kongtx.proxy.context import IncomingRequest, ProxyContext
        from kongtx.proxy.headers import HeaderList
        from kongtx.router import Match

        api = frozen_row(API_ROW)
        for host, scheme, addr, port in (
            ("a.example", "http", "10.0.0.2", 8000),
            ("a.example", "http", "10.0.0.2", 8000),
            ("a.example", "https", "10.0.0.2", 8000),
            ("a.example", "https", "10.0.0.2", 8443),
            ("B.example:1", "https", "10.0.0.2", 8443),
            (None, "https", "10.0.0.2", 8443),
            (None, "https", "10.0.0.3", 8443),
            ("", "https", "10.0.0.4", 8443),
            ("a.example", "http", "10.0.0.2", 8000),
        ):
            headers = HeaderList([("Host", host)] if host is not None else [])
            incoming = IncomingRequest(
                "GET", "/p", headers, "10.0.0.1", scheme=scheme, server_addr=addr, server_port=port
            )
            ctx = ProxyContext(api, Match(api, "path", None), incoming, "10.0.0.9", "/p", "", 1.5)
            self.assertEqual(basic_json(ctx), encode(basic_serialize(ctx)))
