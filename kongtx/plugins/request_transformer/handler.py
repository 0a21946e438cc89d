# -*- test-case-name: tests.unit.test_plugin_request_transformer -*-
"""request-transformer: rewrite the request before it goes upstream (SPEC §4.5).

Order, as Kong 0.9 (``kong/plugins/request-transformer/access.lua``): the body,
then headers, then the query string; within each, remove → replace (only names
already present) → add (only names absent) → append (one more value).  Bodies are
touched only for JSON, urlencoded and multipart requests (no append for
multipart); a JSON body that does not parse is left alone.  A ``Host`` set by a
header rule also becomes the upstream Host.

Rules are parsed once per configuration (:mod:`kongtx.plugins.transform_rules`,
shared with response-transformer).

Where Kong 0.9 misbehaved we do what the SPEC row says instead: an empty JSON body
is an empty object (Kong raised an error adding to it); a JSON ``false`` counts as
present (Lua's truthiness made it "absent"); a JSON body that is not an object is
left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote_plus

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.transform_rules import Rule, Rules, append_value, apply_header_rules

# ---------------------------------------------------------------- bodies

JSON, MULTIPART, URLENCODED = "json", "multipart", "urlencoded"


def body_kind(content_type: str | None) -> str | None:
    """Which body format a Content-Type announces (Kong's substring checks, in its order)."""
    if content_type is None:
        return None
    lowered = content_type.lower()
    if "application/json" in lowered:
        return JSON
    if "multipart/form-data" in lowered:
        return MULTIPART
    if "application/x-www-form-urlencoded" in lowered:
        return URLENCODED
    return None


def transform_json(rules: Rules, body: bytes) -> bytes | None:
    """The new JSON body, or ``None`` to leave the body as it is."""
    if body:
        try:
            params = json.loads(body)
        except ValueError:
            return None
        if not isinstance(params, dict):
            return None
    else:
        params = {}
    changed = False
    if body and rules.remove:
        for name, _ in rules.remove:
            params.pop(name, None)
        changed = True
    if body:
        for name, value in rules.replace:
            if name in params:
                if value is None:
                    del params[name]
                else:
                    params[name] = value
                changed = True
    for name, value in rules.add:
        if name not in params and value is not None:
            params[name] = value
            changed = True
    for name, value in rules.append:
        if value is not None:
            params[name] = append_value(params.get(name), value)
            changed = True
    if not changed:
        return None
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_args(text: bytes) -> list[tuple[str, str | None]]:
    """``a=1&b&c=`` → ``[("a", "1"), ("b", None), ("c", "")]`` (bytes kept via surrogates)."""
    out: list[tuple[str, str | None]] = []
    for piece in text.decode("latin-1").split("&"):
        if not piece:
            continue
        name, eq, value = piece.partition("=")
        out.append((_unquote(name), _unquote(value) if eq else None))
    return out


def _unquote(text: str) -> str:
    raw = unquote_plus(text, encoding="latin-1")
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def _quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe="-_.~")


def encode_args(args: Sequence[tuple[str, str | None]]) -> bytes:
    """The inverse of :func:`decode_args` (ngx.encode_args: bare flags stay bare)."""
    parts = [_quote(k) if v is None else f"{_quote(k)}={_quote(v)}" for k, v in args]
    return "&".join(parts).encode("ascii")


def transform_args(
    rules_remove: Sequence[Rule],
    rules_replace: Sequence[Rule],
    rules_add: Sequence[Rule],
    rules_append: Sequence[Rule],
    args: list[tuple[str, str | None]],
) -> bool:
    """Apply the four rule lists to ``args`` in place; True if anything was done."""
    changed = False
    if rules_remove:
        names = {name for name, _ in rules_remove}
        args[:] = [(k, v) for k, v in args if k not in names]
        changed = True
    for name, value in rules_replace:
        if any(k == name for k, _ in args):
            _replace_arg(args, name, value)
            changed = True
    for name, value in rules_add:
        if value is not None and not any(k == name for k, _ in args):
            args.append((name, value))
            changed = True
    for name, value in rules_append:
        if value is None:
            continue
        existing = [v for k, v in args if k == name]
        if existing and all(v is None for v in existing):
            # a bare flag is Lua's ``true``, which append_value replaces
            args[:] = [(k, v) for k, v in args if k != name]
        args.append((name, value))
        changed = True
    return changed


def _replace_arg(args: list[tuple[str, str | None]], name: str, value: str | None) -> None:
    """Every value of ``name`` becomes the one ``value`` (None: the name goes)."""
    out: list[tuple[str, str | None]] = []
    placed = False
    for k, v in args:
        if k != name:
            out.append((k, v))
        elif not placed and value is not None:
            out.append((name, value))
            placed = True
    args[:] = out


def transform_urlencoded(rules: Rules, body: bytes) -> bytes | None:
    """The new urlencoded body, or ``None`` to leave the body as it is."""
    args = decode_args(body)
    remove = rules.remove if body else ()
    replace = rules.replace if body else ()
    if not transform_args(remove, replace, rules.add, rules.append, args):
        return None
    return encode_args(args)


_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
_PART_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)


class Part:
    """One part of a multipart/form-data body: its header lines and its content."""

    __slots__ = ("headers", "name", "value")

    def __init__(self, name: str | None, headers: list[bytes], value: bytes) -> None:
        self.name = name
        self.headers = headers
        self.value = value

    @classmethod
    def simple(cls, name: str, value: str) -> Part:
        """A plain form field (lua-multipart's ``set_simple``)."""
        disposition = f'Content-Disposition: form-data; name="{name}"'.encode()
        return cls(name, [disposition], value.encode("utf-8"))


def multipart_boundary(content_type: str) -> bytes | None:
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).encode("latin-1")


def parse_multipart(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of ``body``, or ``None`` when it is not a multipart body we can rebuild."""
    segments = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(segments) < 2:
        return None
    parts: list[Part] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            return parts
        line_end = segment.find(b"\r\n")
        if line_end < 0 or segment[:line_end].strip(b" \t"):
            return None
        head, sep, value = segment[line_end + 2 :].partition(b"\r\n\r\n")
        if not sep:
            if head:
                return None
            value = b""
        headers = head.split(b"\r\n") if head else []
        name: str | None = None
        for line in headers:
            if line.lower().startswith(b"content-disposition:"):
                found = _PART_NAME.search(line.split(b":", 1)[1])
                if found is not None:
                    name = found.group(1).decode("utf-8", "surrogateescape")
        parts.append(Part(name, headers, value))
    return None  # no closing delimiter: truncated


def encode_multipart(parts: Sequence[Part], boundary: bytes) -> bytes:
    """lua-multipart's ``tostring``: each part, then the closing delimiter."""
    out = bytearray()
    for part in parts:
        out += b"--" + boundary + b"\r\n"
        for line in part.headers:
            out += line + b"\r\n"
        out += b"\r\n" + part.value + b"\r\n"
    out += b"--" + boundary + b"--"
    return bytes(out)


def transform_multipart(rules: Rules, body: bytes, content_type: str) -> bytes | None:
    """The new multipart body, or ``None`` to leave it (append is not supported, as Kong)."""
    boundary = multipart_boundary(content_type)
    if boundary is None:
        return None
    parts = parse_multipart(body, boundary) if body else []
    if parts is None:
        return None
    changed = False
    if body and rules.remove:
        names = {name for name, _ in rules.remove}
        parts = [p for p in parts if p.name not in names]
        changed = True
    if body:
        for name, value in rules.replace:
            if any(p.name == name for p in parts):
                parts = [p for p in parts if p.name != name]
                if value is not None:
                    parts.append(Part.simple(name, value))
                changed = True
    for name, value in rules.add:
        if value is not None and not any(p.name == name for p in parts):
            parts.append(Part.simple(name, value))
            changed = True
    if not changed:
        return None
    return encode_multipart(parts, boundary)


# ---------------------------------------------------------------- handler


class Handler(BasePlugin):
    """The request-transformer plugin's request-time half."""

    PRIORITY = 800

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.body = Rules(config, "body")
        self.headers = Rules(config, "headers")
        self.query = Rules(config, "querystring")

    def access(self, ctx: RequestContext) -> PhaseResult:
        if self.body:
            content_type = ctx.headers.get("Content-Type")
            kind = body_kind(content_type)
            if kind is not None:
                # only now is the body read: requests without body rules stream
                return self._access_with_body(ctx, kind, content_type or "")
        self._transform_headers(ctx)
        self._transform_query(ctx)
        return None

    async def _access_with_body(self, ctx: RequestContext, kind: str, content_type: str) -> None:
        body = await ctx.read_body()
        if kind == JSON:
            new = transform_json(self.body, body)
        elif kind == URLENCODED:
            new = transform_urlencoded(self.body, body)
        else:
            new = transform_multipart(self.body, body, content_type)
        if new is not None:
            ctx.set_body(new)  # fixes Content-Length
        self._transform_headers(ctx)
        self._transform_query(ctx)

    def _transform_headers(self, ctx: RequestContext) -> None:
        # a Host set by a header rule also becomes the upstream Host
        apply_header_rules(ctx.headers, self.headers, ctx.set_upstream_host)

    def _transform_query(self, ctx: RequestContext) -> None:
        query = self.query
        if query:
            transform_args(query.remove, query.replace, query.add, query.append, ctx.query)
