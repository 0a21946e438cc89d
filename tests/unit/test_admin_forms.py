"""Admin body and query parsing: encodings, dotted keys, arrays, 415/400/413."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kongtx.admin.forms import (
    FormError,
    check_content_type,
    expand_object,
    expand_pairs,
    parse_body,
    parse_query,
    parse_query_string,
    read_body,
)

FORM = "application/x-www-form-urlencoded"


def multipart(fields: list[tuple[str, str]], boundary: str = "b0undary") -> tuple[str, bytes]:
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    body = "".join(parts) + f"--{boundary}--\r\n"
    return f"multipart/form-data; boundary={boundary}", body.encode()


class ContentTypeTests(SynchronousTestCase):
    def test_write_without_content_type_is_415(self) -> None:
        """PUT, POST and PATCH without any Content-Type are refused with 415 and no body."""
        for method in ("PUT", "POST", "PATCH"):
            error = self.assertRaises(FormError, check_content_type, method, None)
            self.assertEqual((error.status, error.body), (415, None))

    def test_other_methods_need_no_content_type(self) -> None:
        """GET and DELETE pass without Content-Type, and any Content-Type satisfies writes."""
        check_content_type("GET", None)
        check_content_type("DELETE", None)
        check_content_type("POST", "text/plain")


class BodyTests(SynchronousTestCase):
    def test_json_body(self) -> None:
        """A JSON object body keeps its value types and expands dotted keys."""
        body = json.dumps({"name": "x", "config.minute": 10, "enabled": False}).encode()
        self.assertEqual(
            parse_body("POST", "application/json; charset=utf-8", body),
            {"name": "x", "config": {"minute": 10}, "enabled": False},
        )

    def test_bad_json_is_400(self) -> None:
        """Unparsable JSON on a write is 400 Cannot parse JSON body."""
        error = self.assertRaises(FormError, parse_body, "POST", "application/json", b"{nope")
        self.assertEqual((error.status, error.body), (400, {"message": "Cannot parse JSON body"}))

    def test_json_that_is_not_an_object_is_400(self) -> None:
        """A JSON array or scalar cannot be params, so it is refused like bad JSON."""
        for raw in (b"[1,2]", b'"x"', b"3", b"null"):
            error = self.assertRaises(FormError, parse_body, "PATCH", "application/json", raw)
            self.assertEqual(error.status, 400)

    def test_non_json_constants_are_400(self) -> None:
        """NaN and Infinity are not JSON, so a body holding them is refused."""
        for raw in (b'{"a": NaN}', b'{"a": -Infinity}'):
            error = self.assertRaises(FormError, parse_body, "POST", "application/json", raw)
            self.assertEqual(error.status, 400)

    def test_deep_json_is_400(self) -> None:
        """Absurdly nested JSON (even past the parser's recursion limit) is a 400."""
        for depth in (40, 100_000):
            raw = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
            error = self.assertRaises(FormError, parse_body, "PUT", "application/json", raw)
            self.assertEqual(error.status, 400)

    def test_deep_dotted_keys_are_400(self) -> None:
        """A dotted key thousands of levels deep is refused, in bodies and query strings."""
        key = ".".join(["a"] * 5000)
        error = self.assertRaises(FormError, parse_body, "POST", FORM, key.encode() + b"=1")
        self.assertEqual(error.status, 400)
        error = self.assertRaises(FormError, parse_query, {key.encode(): [b"1"]})
        self.assertEqual(error.status, 400)

    def test_bad_json_on_delete_is_ignored(self) -> None:
        """Kong checked JSON only on PUT/POST/PATCH: a DELETE with bad JSON has no params."""
        self.assertEqual(parse_body("DELETE", "application/json", b"{nope"), {})

    def test_invalid_utf8_json_is_400(self) -> None:
        """Bytes that are not UTF-8 under a JSON Content-Type are a 400, not a crash."""
        error = self.assertRaises(FormError, parse_body, "POST", "application/json", b"\xff\xfe")
        self.assertEqual(error.status, 400)

    def test_form_body(self) -> None:
        """A form body: repeated keys become lists, dotted keys nest, values stay strings."""
        body = b"name=x&methods=GET&methods=POST&config.second=5&tags=a,b&empty="
        self.assertEqual(
            parse_body("POST", FORM, body),
            {
                "name": "x",
                "methods": ["GET", "POST"],
                "config": {"second": "5"},
                "tags": "a,b",
                "empty": "",
            },
        )

    def test_indexed_form_arrays(self) -> None:
        """``a[2]=y&a[1]=x`` is ``["x", "y"]`` ordered by index; ``a[]`` appends."""
        body = b"redirect_uri[2]=http%3A%2F%2Fb&redirect_uri[1]=http%3A%2F%2Fa&g[]=1&g[]=2"
        self.assertEqual(
            parse_body("POST", FORM, body),
            {"redirect_uri": ["http://a", "http://b"], "g": ["1", "2"]},
        )

    def test_bracket_object_keys(self) -> None:
        """``config[minute]=1`` is the same as ``config.minute=1``."""
        self.assertEqual(parse_body("POST", FORM, b"config[minute]=1"), {"config": {"minute": "1"}})

    def test_multipart_body(self) -> None:
        """multipart/form-data parts are fields; a part's content is the value."""
        ct, body = multipart(
            [("name", "x"), ("config.key_names", "apikey"), ("a", "1"), ("a", "2")]
        )
        self.assertEqual(
            parse_body("POST", ct, body),
            {"name": "x", "config": {"key_names": "apikey"}, "a": ["1", "2"]},
        )

    def test_multipart_file_part(self) -> None:
        """A file upload part gives its content (Kong's rsa_public_key uploads)."""
        body = (
            b'--B\r\nContent-Disposition: form-data; name="rsa_public_key"; filename="k.pem"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n-----BEGIN PUBLIC KEY-----\nabc\r\n--B--\r\n"
        )
        self.assertEqual(
            parse_body("POST", "multipart/form-data; boundary=B", body),
            {"rsa_public_key": "-----BEGIN PUBLIC KEY-----\nabc"},
        )

    def test_unknown_content_type_has_no_params(self) -> None:
        """A body of another type is not read as params."""
        self.assertEqual(parse_body("POST", "text/plain", b"name=x"), {})

    def test_body_limit_is_413(self) -> None:
        """A body over the limit is a 413; one at the limit is read whole."""
        self.assertEqual(read_body(io.BytesIO(b"x" * 10), limit=10), b"x" * 10)
        error = self.assertRaises(FormError, read_body, io.BytesIO(b"x" * 11), 10)
        self.assertEqual(error.status, 413)

    def test_no_content(self) -> None:
        """No content object and an empty body both mean no params."""
        self.assertEqual(read_body(None), b"")
        self.assertEqual(parse_body("POST", "application/json", b""), {})


class ExpansionTests(SynchronousTestCase):
    def test_query_string(self) -> None:
        """Query arguments expand like form fields (dotted keys, repeats)."""
        args = {b"config.minute": [b"10"], b"name": [b"a", b"b"], b"x": [b"\xff"]}
        self.assertEqual(
            parse_query(args),
            {"config": {"minute": "10"}, "name": ["a", "b"], "x": "\ufffd"},
        )

    def test_raw_query_string(self) -> None:
        """A raw query string decodes UTF-8 escapes and survives undecodable bytes."""
        self.assertEqual(
            parse_query_string(b"a.b=%C3%A9&a.c=1&x=%FF&r=\xc3\xa9&flag"),
            {"a": {"b": "\u00e9", "c": "1"}, "x": "\ufffd", "r": "\u00e9", "flag": ""},
        )

    def test_dotted_and_object_merge(self) -> None:
        """An explicit object and dotted keys into it are merged, recursively."""
        self.assertEqual(
            expand_object({"config": {"a": 1, "b.c": 2}, "config.d": 3}),
            {"config": {"a": 1, "b": {"c": 2}, "d": 3}},
        )

    def test_degenerate_dotted_keys_are_kept(self) -> None:
        """Keys with empty segments (``a.``, ``.a``) are not expanded, so nothing is lost."""
        self.assertEqual(expand_object({"a.": 1, ".b": 2}), {"a.": 1, ".b": 2})

    def test_scalar_then_dotted_key(self) -> None:
        """A dotted key under a scalar replaces it by an object (deterministically)."""
        self.assertEqual(expand_pairs([("a", "1"), ("a.b", "2")]), {"a": {"b": "2"}})

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=12))
    def test_expand_pairs_never_fails(self, pairs: list[tuple[str, str]]) -> None:
        """Any list of form fields expands into a dict of JSON-able values without raising."""
        result: Any = expand_pairs(pairs)
        self.assertIsInstance(result, dict)
        json.dumps(result)
