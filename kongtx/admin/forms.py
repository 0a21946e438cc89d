# -*- test-case-name: tests.unit.test_admin_forms -*-
"""Admin API request bodies and query strings -> one nested ``params`` dict (SPEC §1.1).

Why this is its own module: Kong 0.9's Admin API accepted three body encodings
and two array spellings, expanded dotted keys everywhere, and answered a few
malformed inputs with precise statuses (415, 400, 413).  Scripts written for Kong
rely on all of it, so it is done once here, as pure functions over bytes and
strings, and tested on its own.

What this module does *not* do: type coercion.  Form values stay strings (a
single ``a=x,y`` stays ``"x,y"``); trimming, splitting comma strings into arrays
and reading ``"true"``/``"false"`` are the schema's job, exactly as in Kong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import IO, Any
from urllib.parse import parse_qsl

#: ``client_max_body_size 10m`` of Kong's admin server block.
MAX_BODY_BYTES = 10 * 1024 * 1024

#: How deeply params may nest.  Kong's deepest real params are three levels
#: (``config.limits.sms.minute``); a cap keeps a hostile ``a.a.a...`` key or
#: ``[[[[...]]]]`` body from reaching recursive validators as a 500.
MAX_DEPTH = 32

#: Methods whose requests must say what their body is (Kong's before_filter).
BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})

_INDEXED = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")


class FormError(Exception):
    """A body the Admin API refuses before any route sees it.

    ``body`` is the JSON value to send, or ``None`` for an empty body (415).
    """

    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def check_content_type(method: str, content_type: str | None) -> None:
    """415 with an empty body for a PUT/POST/PATCH that has no Content-Type at all."""
    if method in BODY_METHODS and content_type is None:
        raise FormError(415)


def read_body(content: IO[bytes] | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body, or 413 when it is larger than ``limit`` bytes."""
    if content is None:
        return b""
    content.seek(0)
    data = content.read(limit + 1)
    if len(data) > limit:
        raise FormError(413, {"message": "Payload too large"})
    return data


def parse_body(method: str, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Decode ``body`` by its Content-Type into nested params.

    Bad JSON is a 400 only for PUT/POST/PATCH (Kong checked nothing else: a
    DELETE /cluster with a broken JSON body simply has no params).
    """
    if content_type is None or not body:
        return {}
    kind = content_type.lower()
    if "application/json" in kind:
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            value = None
        if not isinstance(value, dict) or too_deep(value):
            if method in BODY_METHODS:
                raise FormError(400, {"message": "Cannot parse JSON body"})
            return {}
        return checked(expand_object(value))
    if "application/x-www-form-urlencoded" in kind:
        text = body.decode("utf-8", errors="replace")
        return checked(expand_pairs(parse_qsl(text, keep_blank_values=True)))
    if "multipart/form-data" in kind:
        return checked(expand_pairs(multipart_pairs(content_type, body)))
    return {}


def _reject_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (RFC 8259), though Python's parser takes them."""
    raise ValueError(f"{name} is not JSON")


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when dicts/lists nest deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def checked(params: dict[str, Any]) -> dict[str, Any]:
    """``params``, or 400 when dotted keys built something absurdly deep."""
    if too_deep(params):
        raise FormError(400, {"message": "Cannot parse body: params nest too deeply"})
    return params


def parse_query(args: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    """Query-string arguments (Twisted's ``request.args``) -> nested params."""
    pairs: list[tuple[str, str]] = []
    for key, values in args.items():
        name = key.decode("utf-8", errors="replace")
        pairs.extend((name, v.decode("utf-8", errors="replace")) for v in values)
    return checked(expand_pairs(pairs))


def parse_query_string(query: bytes) -> dict[str, Any]:
    """A raw query string (the part of the URI after ``?``) -> nested params.

    Percent-escapes decode as UTF-8 and anything undecodable becomes U+FFFD, so
    a hostile query string can only ever produce strange filter values.
    """
    text = query.decode("utf-8", errors="replace")
    pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace")
    return checked(expand_pairs(pairs))


def multipart_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The ``(name, content)`` of every named part; a part's content is its value."""
    head = b"Content-Type: " + content_type.encode("latin-1", errors="replace") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return []
    pairs: list[tuple[str, str]] = []
    for part in message.get_payload():
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        pairs.append((name, data.decode("utf-8", errors="replace")))
    return pairs


def expand_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Flat form fields -> nested params.

    A repeated key becomes a list in arrival order; ``a[1]=x&a[2]=y`` becomes
    ``["x", "y"]`` ordered by index (``a[]`` appends); ``a[b]=x`` is ``a.b=x``;
    dotted keys become nested objects.
    """
    flat: dict[str, Any] = {}
    indexed: dict[str, list[tuple[str, Any]]] = {}
    for key, value in pairs:
        match = _INDEXED.match(key)
        if match is not None:
            name, brackets = match.group(1), _BRACKET.findall(match.group(2))
            if all(b.isdigit() or b == "" for b in brackets) and len(brackets) == 1:
                indexed.setdefault(name, []).append((brackets[0], value))
                continue
            key = ".".join([name, *brackets])
        if key in flat:
            previous = flat[key]
            flat[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            flat[key] = value
    for name, items in indexed.items():
        numbered = sorted((int(i), v) for i, v in items if i != "")
        values = [v for _, v in numbered] + [v for i, v in items if i == ""]
        previous = flat.get(name)
        if previous is None:
            flat[name] = values
        else:
            flat[name] = (previous if isinstance(previous, list) else [previous]) + values
    return expand_object(flat)


def expand_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Expand dotted keys into nested objects, recursively (JSON bodies too).

    ``{"config.minute": 10}`` -> ``{"config": {"minute": 10}}``; an explicit
    ``config`` object and dotted ``config.x`` keys are merged.
    """
    result: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            value = expand_object(value)
        parts = str(key).split(".")
        if len(parts) == 1 or any(p == "" for p in parts):
            _merge(result, str(key), value)
            continue
        target = result
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        _merge(target, parts[-1], value)
    return result


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    existing = target.get(key)
    if isinstance(existing, dict) and isinstance(value, dict):
        for k, v in value.items():
            _merge(existing, k, v)
    else:
        target[key] = value
