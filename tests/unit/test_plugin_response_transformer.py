"""The response-transformer plugin at request time (SPEC §4.5)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.response_transformer.handler import Handler
from tests.fakes import FakeContext

KINDS = ("remove", "replace", "add", "append")


def config(**rules: list[str]) -> dict[str, Any]:
    conf: dict[str, Any] = {kind: {"headers": [], "json": []} for kind in KINDS}
    for key, entries in rules.items():
        kind, part = key.split("_", 1)
        conf[kind][part] = entries
    return conf


def respond(
    h: Handler, headers: list[tuple[str, str]], chunks: list[bytes]
) -> tuple[FakeContext, bytes]:
    """Run header_filter and body_filter over an upstream response."""
    ctx = FakeContext()
    for name, value in headers:
        ctx.response_headers.add(name, value)
    h.access(ctx)
    h.header_filter(ctx)
    out = b""
    for i, chunk in enumerate(chunks):
        out += h.body_filter(ctx, chunk, i == len(chunks) - 1)
    return ctx, out


JSON_HEADERS = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", "40")]


class HeaderTests(SynchronousTestCase):
    def test_order(self) -> None:
        """remove → replace (present only) → add (absent only) → append."""
        h = Handler(
            config(
                remove_headers=["x-gone"],
                replace_headers=["X-Old:new", "X-Missing:m"],
                add_headers=["X-Old:no", "X-Added:a"],
                append_headers=["X-Old:again", "X-Multi:1"],
            )
        )
        ctx, _ = respond(h, [("X-Gone", "1"), ("X-Old", "old")], [b"body"])
        self.assertEqual(
            ctx.response_headers.items(),
            [("X-Old", "new"), ("X-Added", "a"), ("X-Old", "again"), ("X-Multi", "1")],
        )

    def test_content_length_kept_without_json_rules(self) -> None:
        """Header-only rules leave Content-Length and the body alone."""
        h = Handler(config(add_headers=["X-A:1"]))
        ctx, out = respond(h, JSON_HEADERS, [b'{"a":1}'])
        self.assertEqual(ctx.response_headers.get("Content-Length"), "40")
        self.assertEqual(out, b'{"a":1}')


class JsonTests(SynchronousTestCase):
    def test_json_rules(self) -> None:
        """remove → replace → add → append on top-level keys, values as strings, Content-Length removed."""
        h = Handler(
            config(
                remove_json=["gone"],
                replace_json=["n:2", "missing:x"],
                add_json=["n:no", "added:true"],
                append_json=["s:b", "list:y", "fresh:f"],
            )
        )
        ctx, out = respond(h, JSON_HEADERS, [b'{"gone":1,"n":1,', b'"s":"a","list":["x"]}', b""])
        self.assertIsNone(ctx.response_headers.get("Content-Length"))
        self.assertEqual(
            json.loads(out),
            {"n": "2", "s": ["a", "b"], "list": ["x", "y"], "added": "true", "fresh": ["f"]},
        )

    def test_chunks_buffered_until_last(self) -> None:
        """Nothing is sent before the last chunk; the last chunk is part of the document."""
        h = Handler(config(add_json=["k:v"]))
        ctx = FakeContext()
        ctx.response_headers.set("Content-Type", "application/json")
        h.header_filter(ctx)
        self.assertEqual(h.body_filter(ctx, b'{"a":', False), b"")
        self.assertEqual(json.loads(h.body_filter(ctx, b"1}", True)), {"a": 1, "k": "v"})

    def test_non_json_content_type_untouched(self) -> None:
        """A response that is not JSON streams through unchanged, Content-Length kept."""
        h = Handler(config(add_json=["k:v"]))
        ctx, out = respond(
            h, [("Content-Type", "text/html"), ("Content-Length", "9")], [b"<p>", b"hi</p>"]
        )
        self.assertEqual(out, b"<p>hi</p>")
        self.assertEqual(ctx.response_headers.get("Content-Length"), "9")

    def test_invalid_json_passes_unchanged(self) -> None:
        """A JSON-typed body that does not parse is sent as it came (Kong sent nothing)."""
        h = Handler(config(add_json=["k:v"]))
        _, out = respond(h, JSON_HEADERS, [b"not ", b"json"])
        self.assertEqual(out, b"not json")

    def test_non_object_passes_unchanged(self) -> None:
        """A JSON array is not an object: it passes unchanged."""
        h = Handler(config(add_json=["k:v"]))
        _, out = respond(h, JSON_HEADERS, [b"[1, 2]"])
        self.assertEqual(out, b"[1, 2]")

    def test_values_injected_verbatim(self) -> None:
        """Slashes, quotes and backslashes arrive as written in the config."""
        h = Handler(config(add_json=['url:http://x/"q"\\d']))
        _, out = respond(h, JSON_HEADERS, [b"{}"])
        self.assertEqual(json.loads(out), {"url": 'http://x/"q"\\d'})
