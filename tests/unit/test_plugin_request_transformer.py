"""The request-transformer plugin at request time (SPEC §4.5)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.request_transformer.handler import (
    Handler,
    decode_args,
    encode_args,
    parse_multipart,
)
from kongtx.plugins.transform_rules import parse_rules
from tests.fakes import FakeContext

KINDS = ("remove", "replace", "add", "append")
PARTS = ("body", "headers", "querystring")


def config(**rules: list[str]) -> dict[str, Any]:
    """A full config (every array defaults to []) with ``kind_part=[...]`` overrides."""
    conf: dict[str, Any] = {kind: {part: [] for part in PARTS} for kind in KINDS}
    for key, entries in rules.items():
        kind, part = key.split("_", 1)
        conf[kind][part] = entries
    return conf


class TransformerTestCase(SynchronousTestCase):
    def run_access(self, conf: dict[str, Any], ctx: FakeContext) -> FakeContext:
        result = Handler(conf).access(ctx)
        if result is not None:

            async def wait() -> None:
                await result

            self.successResultOf(defer.ensureDeferred(wait()))
        return ctx


class RuleParsingTests(SynchronousTestCase):
    def test_name_value_split(self) -> None:
        """The name stops at the first colon; further colons after it are skipped; the value keeps its own."""
        self.assertEqual(
            parse_rules(["a:1", "b::http://x:80/", "c", "d:", ":e"]),
            (("a", "1"), ("b", "http://x:80/"), ("c", None), ("d", None)),
        )


class HeaderTests(TransformerTestCase):
    def test_order_remove_replace_add_append(self) -> None:
        """remove → replace (present only) → add (absent only) → append."""
        ctx = FakeContext(headers=[("X-Gone", "1"), ("X-Old", "a"), ("X-Keep", "k")])
        conf = config(
            remove_headers=["x-gone"],
            replace_headers=["X-Old:b", "X-Missing:z"],
            add_headers=["X-Keep:overwritten", "X-New:n"],
            append_headers=["X-Old:c", "X-Multi:1"],
        )
        self.run_access(conf, ctx)
        self.assertEqual(
            ctx.headers.items(),
            [("X-Old", "b"), ("X-Keep", "k"), ("X-New", "n"), ("X-Old", "c"), ("X-Multi", "1")],
        )

    def test_add_then_remove_in_same_config(self) -> None:
        """Removal runs first, so a removed header can be added back by add."""
        ctx = FakeContext(headers={"X-A": "old"})
        self.run_access(config(remove_headers=["X-A"], add_headers=["X-A:new"]), ctx)
        self.assertEqual(ctx.headers.get_all("X-A"), ["new"])

    def test_host_header_changes_upstream_host(self) -> None:
        """Replacing or adding Host also sets the upstream Host."""
        ctx = FakeContext(headers={"Host": "client.example"})
        self.run_access(config(replace_headers=["host:upstream.example"]), ctx)
        self.assertEqual(ctx.upstream_host, "upstream.example")
        ctx = FakeContext()
        self.run_access(config(add_headers=["Host:added.example"]), ctx)
        self.assertEqual(ctx.upstream_host, "added.example")

    def test_replace_with_empty_value_removes(self) -> None:
        """An empty value is Lua's nil: replace drops the header, add does nothing."""
        ctx = FakeContext(headers={"X-A": "1"})
        self.run_access(config(replace_headers=["X-A:"], add_headers=["X-B:"]), ctx)
        self.assertEqual(ctx.headers.items(), [])

    def test_no_body_rules_never_reads_the_body(self) -> None:
        """Without body rules the plugin stays synchronous and leaves the body streaming."""
        ctx = FakeContext(method="POST", headers={"Content-Type": "application/json"}, body=b"{}")
        self.assertIsNone(Handler(config(add_headers=["X-A:1"])).access(ctx))
        self.assertEqual(ctx.body_reads, 0)


class QueryTests(TransformerTestCase):
    def test_querystring_rules(self) -> None:
        """remove, replace (all values), add (absent only), append (another value)."""
        ctx = FakeContext(
            query=[("drop", "1"), ("r", "1"), ("r", "2"), ("keep", "k"), ("flag", None)]
        )
        conf = config(
            remove_querystring=["drop"],
            replace_querystring=["r:new", "missing:x"],
            add_querystring=["keep:no", "added:yes"],
            append_querystring=["keep:k2", "flag:v"],
        )
        self.run_access(conf, ctx)
        self.assertEqual(
            ctx.query,
            [("r", "new"), ("keep", "k"), ("added", "yes"), ("keep", "k2"), ("flag", "v")],
        )

    def test_body_then_headers_then_querystring(self) -> None:
        """All three parts are transformed in one access phase."""
        ctx = FakeContext(
            method="POST",
            headers={"Content-Type": "application/json"},
            query=[("q", "1")],
            body=b'{"a":1}',
        )
        conf = config(add_body=["b:2"], add_headers=["X-H:h"], add_querystring=["p:2"])
        self.run_access(conf, ctx)
        self.assertEqual(ctx.json_body(), {"a": 1, "b": "2"})
        self.assertEqual(ctx.headers.get("X-H"), "h")
        self.assertEqual(ctx.query, [("q", "1"), ("p", "2")])


class JsonBodyTests(TransformerTestCase):
    def transform(
        self, body: bytes, content_type: str = "application/json", **rules: list[str]
    ) -> FakeContext:
        ctx = FakeContext(method="POST", headers={"Content-Type": content_type}, body=body)
        return self.run_access(config(**rules), ctx)

    def test_json_rules_in_order(self) -> None:
        """remove → replace → add → append on top-level keys; values are strings."""
        ctx = self.transform(
            b'{"gone":1,"r":true,"keep":"k","list":["x"]}',
            remove_body=["gone"],
            replace_body=["r:yes", "missing:no"],
            add_body=["keep:no", "new:v"],
            append_body=["keep:k2", "list:y", "fresh:f"],
        )
        self.assertEqual(
            ctx.json_body(),
            {"r": "yes", "keep": ["k", "k2"], "list": ["x", "y"], "new": "v", "fresh": ["f"]},
        )
        self.assertEqual(ctx.headers.get("Content-Length"), str(len(ctx.body)))

    def test_false_counts_as_present(self) -> None:
        """A JSON false is present: replace changes it, add leaves it."""
        ctx = self.transform(b'{"a":false,"b":false}', replace_body=["a:x"], add_body=["b:y"])
        self.assertEqual(ctx.json_body(), {"a": "x", "b": False})

    def test_content_type_with_charset(self) -> None:
        """application/json; charset=utf-8 is JSON too."""
        ctx = self.transform(b"{}", "Application/JSON; charset=utf-8", add_body=["a:1"])
        self.assertEqual(ctx.json_body(), {"a": "1"})

    def test_unparsable_json_left_alone(self) -> None:
        """A body that is not JSON is sent as it came, Content-Length untouched."""
        ctx = self.transform(b"{nope", add_body=["a:1"])
        self.assertEqual(ctx.body, b"{nope")
        self.assertIsNone(ctx.headers.get("Content-Length"))

    def test_empty_body_gets_added_keys(self) -> None:
        """An empty JSON request body becomes an object holding the added keys."""
        ctx = self.transform(b"", add_body=["a:1"], remove_body=["z"])
        self.assertEqual(ctx.json_body(), {"a": "1"})

    def test_nothing_to_do_keeps_bytes(self) -> None:
        """Rules that change nothing leave the original bytes (formatting included)."""
        ctx = self.transform(b'{ "a" : 1 }', replace_body=["missing:1"])
        self.assertEqual(ctx.body, b'{ "a" : 1 }')

    def test_other_content_types_untouched(self) -> None:
        """Bodies other than JSON, urlencoded and multipart are never read."""
        ctx = self.transform(b"hello", "text/plain", add_body=["a:1"])
        self.assertEqual(ctx.body, b"hello")
        self.assertEqual(ctx.body_reads, 0)

    def test_unicode_survives(self) -> None:
        """Non-ASCII text is re-encoded as UTF-8, not escaped away."""
        ctx = self.transform('{"name":"Zoë"}'.encode(), add_body=["city:Zürich"])
        self.assertEqual(json.loads(ctx.body), {"name": "Zoë", "city": "Zürich"})
        self.assertIn("Zürich".encode(), ctx.body)


class UrlencodedBodyTests(TransformerTestCase):
    CT = "application/x-www-form-urlencoded"

    def transform(self, body: bytes, **rules: list[str]) -> FakeContext:
        ctx = FakeContext(method="POST", headers={"Content-Type": self.CT}, body=body)
        return self.run_access(config(**rules), ctx)

    def test_rules(self) -> None:
        """remove → replace → add → append on form fields, re-encoded, Content-Length fixed."""
        ctx = self.transform(
            b"gone=1&r=old&keep=k&sp=a+b",
            remove_body=["gone"],
            replace_body=["r:new value"],
            add_body=["keep:no", "added:x/y"],
            append_body=["keep:k2"],
        )
        self.assertEqual(ctx.body, b"r=new%20value&keep=k&sp=a%20b&added=x%2Fy&keep=k2")
        self.assertEqual(ctx.headers.get("Content-Length"), str(len(ctx.body)))

    def test_empty_body_only_adds(self) -> None:
        """On an empty body, remove/replace have nothing to do; add still adds."""
        ctx = self.transform(b"", remove_body=["a"], add_body=["a:1"])
        self.assertEqual(ctx.body, b"a=1")

    def test_args_roundtrip(self) -> None:
        """Bare flags, empty values and raw bytes survive decoding and encoding."""
        body = b"flag&empty=&bin=%FF%00&plus=a+b"
        args = decode_args(body)
        self.assertEqual(args[:2], [("flag", None), ("empty", "")])
        self.assertEqual(encode_args(args), b"flag&empty=&bin=%FF%00&plus=a%20b")


class MultipartBodyTests(TransformerTestCase):
    CT = "multipart/form-data; boundary=XyZ"

    def body(self, *fields: tuple[str, str]) -> bytes:
        out = b""
        for name, value in fields:
            out += (
                b'--XyZ\r\nContent-Disposition: form-data; name="'
                + name.encode()
                + b'"\r\n\r\n'
                + value.encode()
                + b"\r\n"
            )
        return out + b"--XyZ--\r\n"

    def transform(self, body: bytes, **rules: list[str]) -> FakeContext:
        ctx = FakeContext(method="POST", headers={"Content-Type": self.CT}, body=body)
        return self.run_access(config(**rules), ctx)

    def fields(self, body: bytes) -> list[tuple[str | None, bytes]]:
        parts = parse_multipart(body, b"XyZ")
        assert parts is not None
        return [(p.name, p.value) for p in parts]

    def test_rules(self) -> None:
        """remove, replace (moved to the end, as lua-multipart), add; append is ignored."""
        ctx = self.transform(
            self.body(("gone", "1"), ("r", "old"), ("keep", "k")),
            remove_body=["gone"],
            replace_body=["r:new"],
            add_body=["keep:no", "added:a"],
            append_body=["keep:k2"],
        )
        self.assertEqual(self.fields(ctx.body), [("keep", b"k"), ("r", b"new"), ("added", b"a")])
        self.assertTrue(ctx.body.endswith(b"--XyZ--"))
        self.assertEqual(ctx.headers.get("Content-Length"), str(len(ctx.body)))

    def test_binary_part_preserved(self) -> None:
        """A file part with CRLFs and binary bytes is kept byte for byte."""
        data = b"\x00\r\n\xff--XyZnot-a-boundary\r\n"
        body = (
            b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--XyZ--\r\n"
        )
        ctx = self.transform(body, add_body=["x:1"])
        parts = parse_multipart(ctx.body, b"XyZ")
        assert parts is not None
        self.assertEqual(parts[0].value, data)
        self.assertIn(b"Content-Type: application/octet-stream", parts[0].headers)

    def test_unparsable_left_alone(self) -> None:
        """A body without a closing delimiter is not rewritten."""
        ctx = self.transform(
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1', add_body=["b:2"]
        )
        self.assertEqual(ctx.body, b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1')
