# -*- test-case-name: tests.unit.test_plugin_oauth2 -*-
"""What the oauth2 endpoints read from a request and write into a redirect URI.

Kong 0.9 merges the query string and the body (form-urlencoded, multipart or
JSON), the body winning; refuses plain HTTP unless a single ``X-Forwarded-Proto:
https`` says TLS ended in front (``accept_http_if_already_terminated``); and
answers an authorization by redirecting with the result in the URI's query (its
fragment for the implicit grant).  The grants themselves are in
:mod:`kongtx.plugins.oauth2.endpoints`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kongtx.plugins.base import RequestContext
from kongtx.plugins.request_transformer.handler import (
    decode_args,
    encode_args,
    multipart_boundary,
    parse_multipart,
)


def _first(values: list[str | None]) -> str | None:
    for value in values:
        if value is not None:
            return value
    return None


def body_params(content_type: str | None, body: bytes) -> dict[str, str]:
    """Parameters of a form-urlencoded, multipart or JSON body (bad JSON gives none)."""
    ct = (content_type or "").lower()
    out: dict[str, str] = {}
    if "multipart/form-data" in ct:
        boundary = multipart_boundary(content_type or "")
        parts = parse_multipart(body, boundary) if boundary else None
        for part in parts or []:
            if part.name is not None and part.name not in out:
                out[part.name] = part.value.decode("utf-8", "replace")
        return out
    if "application/json" in ct:
        try:
            parsed = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError):
            return out
        if isinstance(parsed, dict):
            for key, value in parsed.items():
                if isinstance(value, str):
                    out[key] = value
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    out[key] = json.dumps(value)
        return out
    grouped: dict[str, list[str | None]] = {}
    for key, value in decode_args(body):
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        first = _first(values)
        if first is not None:
            out[key] = first
    return out


def query_params(ctx: RequestContext) -> dict[str, str]:
    """The query string's parameters (first value of each; bare flags ignored)."""
    out: dict[str, str] = {}
    for key, value in ctx.query:
        if value is not None and key not in out:
            out[key] = value
    return out


async def request_params(ctx: RequestContext) -> dict[str, str]:
    """Query string and body parameters merged, the body winning (Kong's table_merge)."""
    params = query_params(ctx)
    body = await ctx.read_body()
    if body:
        params.update(body_params(ctx.headers.get("content-type"), body))
    return params


def https_error(ctx: RequestContext, accept_terminated: bool) -> str | None:
    """Why the endpoint refuses this request's transport, or None when it is HTTPS."""
    if ctx.scheme.lower() == "https":
        return None
    if accept_terminated:
        forwarded = ctx.headers.get_all("x-forwarded-proto")
        if len(forwarded) > 1:
            return "Only one X-Forwarded-Proto header allowed"
        if forwarded and forwarded[0].strip().lower() == "https":
            return None
    return "You must use HTTPS"


def add_params(uri: str, params: Mapping[str, Any], fragment: bool) -> str:
    """``uri`` with ``params`` merged into its query (or its fragment for implicit grants)."""
    parts = urlsplit(uri)
    existing = parts.fragment if fragment else parts.query
    args = [
        (k, v) for k, v in decode_args(existing.encode("latin-1", "replace")) if k not in params
    ]
    args += [(k, str(v)) for k, v in params.items() if v is not None]
    encoded = encode_args(args).decode("ascii")
    if fragment:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, encoded))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, encoded, parts.fragment))
