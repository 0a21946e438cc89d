"""The log serializer's memory of the last headers and query args (issue 8): the JSON
of a headers list or query reusing the last one's must be the bytes a fresh
serialization gives, whatever changed between two calls."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

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
