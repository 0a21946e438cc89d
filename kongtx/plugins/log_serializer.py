# -*- test-case-name: tests.unit.test_plugin_log_serializer -*-
"""Kong's "basic" log serializer (SPEC §4.6): what every logging plugin sends.

Field for field as Kong 0.9's ``kong/plugins/log-serializers/basic.lua``::

    request{uri, request_uri, querystring{}, method, headers{}, size}
    response{status, headers{}, size}
    latencies{kong, proxy, request}          (ms; proxy is -1 when never proxied)
    authenticated_entity{id, consumer_id}    (only when a credential was found)
    api{...the API row...}, client_ip, started_at (ms)

Headers and query args are shaped like ngx's tables: names lower-cased, a
repeated one becomes a list, a bare query flag is ``true``.  Sizes are
``$request_length`` / ``$bytes_sent``: the request line and headers plus the
body, and the status line and headers plus the body, recomputed from what the
proxy parsed and sent (the exact bytes a client put on the wire, e.g. extra
spaces, are not kept).  The context is the proxy's ``ProxyContext``; a field it
cannot give (a plain :class:`~kongtx.plugins.base.RequestContext`) gets Kong's
"not set" value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "basic_serialize",
    "capture_request_body",
    "capture_response_chunk",
    "encode",
    "headers_table",
    "query_table",
    "request_host",
]

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Request Entity Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _ngx_table(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """An ngx args/headers table: the first value of a name as is, a repeated one a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            current = out[key]
            if isinstance(current, list):
                current.append(value)
            else:
                out[key] = [current, value]
        else:
            out[key] = value
    return out


def headers_table(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``ngx.req.get_headers()``: lower-case names; a repeated header is a list."""
    return _ngx_table((name.lower(), value) for name, value in items)


def query_table(args: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """``ngx.req.get_uri_args()``: a bare flag is ``True``, a repeated key a list."""
    return _ngx_table((key, True if value is None else value) for key, value in args)


def request_host(ctx: Any) -> str:
    """nginx's ``$host``: the Host header without its port, lower-cased, else the server address."""
    host: str | None = ctx.headers.get("host")
    if not host:
        return str(getattr(ctx, "server_addr", "") or "")
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    return host.split(":", 1)[0]


def _request_uri(ctx: Any) -> str:
    uri = getattr(ctx, "request_uri", None)
    if isinstance(uri, str) and uri:
        return uri
    raw = getattr(ctx, "raw_query", "")
    return f"{ctx.path}?{raw}" if raw else str(ctx.path)


def _head_size(first_line: str, headers: Iterable[tuple[str, str]]) -> int:
    size = len(first_line.encode("latin-1", "replace")) + 2
    for name, value in headers:
        size += len(name.encode("latin-1", "replace")) + len(value.encode("utf-8")) + 4
    return size + 2


def _int_or(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


def basic_serialize(ctx: Any) -> dict[str, Any]:
    """The basic serializer's message for one finished request."""
    uri = _request_uri(ctx)
    req_headers = ctx.headers.items()
    resp_headers = ctx.response_headers.items()
    status = int(ctx.status or 0)
    body_in = _int_or(getattr(ctx, "request_size", None), 0)
    body_out = _int_or(getattr(ctx, "response_size", None), 0)
    request_ms = _int_or(getattr(ctx, "request_latency", None), 0)
    proxy_ms = getattr(ctx, "proxy_latency", None)
    upstream_ms = getattr(ctx, "upstream_latency", None)
    if isinstance(upstream_ms, int | float) and getattr(ctx, "upstream_url", None):
        waiting = int(upstream_ms)
        kong = max(0, request_ms - waiting)
    else:
        waiting = -1
        kong = _int_or(proxy_ms, request_ms)
    message: dict[str, Any] = {
        "request": {
            "uri": uri,
            "request_uri": f"{ctx.scheme}://{request_host(ctx)}:{ctx.server_port}{uri}",
            "querystring": query_table(ctx.query),
            "method": ctx.method,
            "headers": headers_table(req_headers),
            "size": _head_size(f"{ctx.method} {uri} HTTP/1.1", req_headers) + body_in,
        },
        "response": {
            "status": status,
            "headers": headers_table(resp_headers),
            "size": _head_size(f"HTTP/1.1 {status} {_REASONS.get(status, '')}", resp_headers)
            + body_out,
        },
        "latencies": {"kong": kong, "proxy": waiting, "request": request_ms},
        # a Lua table has no nil fields: NULL columns are absent, as in the Admin API
        "api": {k: v for k, v in ctx.api.items() if v is not None},
        "client_ip": ctx.client_ip,
        "started_at": int(ctx.started_at * 1000),
    }
    credential = ctx.credential
    if credential is not None:
        message["authenticated_entity"] = {
            "id": credential.get("id"),
            "consumer_id": credential.get("consumer_id"),
        }
    return message


def encode(message: Any) -> bytes:
    """Compact JSON, as cjson wrote it (non-ASCII kept as UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode(
        "utf-8"
    )


#: how much of a body galileo/runscope keep per request when asked to log bodies
MAX_LOGGED_BODY = 1 << 20

#: ctx.shared keys of the captured bodies
REQUEST_BODY_KEY = "log.request_body"
RESPONSE_BODY_KEY = "log.response_body"


async def capture_request_body(ctx: Any) -> None:
    """Keep the request body for a body-logging plugin (bodies over the cap are skipped)."""
    if REQUEST_BODY_KEY in ctx.shared:
        return
    length = ctx.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_LOGGED_BODY:
        ctx.shared[REQUEST_BODY_KEY] = None
        return
    body = await ctx.read_body()
    ctx.shared[REQUEST_BODY_KEY] = body if len(body) <= MAX_LOGGED_BODY else None


def capture_response_chunk(ctx: Any, chunk: bytes) -> None:
    """Append a response chunk to the captured body, up to the cap (then stop keeping it)."""
    shared = ctx.shared
    kept = shared.get(RESPONSE_BODY_KEY)
    if kept is None:
        if RESPONSE_BODY_KEY in shared:
            return
        kept = shared[RESPONSE_BODY_KEY] = bytearray()
    if len(kept) + len(chunk) > MAX_LOGGED_BODY:
        shared[RESPONSE_BODY_KEY] = None
        return
    kept.extend(chunk)
