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
import json.encoder
import sys
from collections.abc import Callable, Iterable
from typing import Any

from kongtx.store.rows import FrozenRow

__all__ = [
    "basic_json",
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


def _headers_table(items: list[tuple[str, str]]) -> dict[str, Any]:
    # most requests repeat no header: one comprehension, the grouping only when needed
    table = {name.lower(): value for name, value in items}
    if len(table) == len(items):
        return table
    return _ngx_table((name.lower(), value) for name, value in items)


def _query_table(args: list[tuple[str, str | None]]) -> dict[str, Any]:
    table: dict[str, Any] = {key: True if value is None else value for key, value in args}
    if len(table) == len(args):
        return table
    return _ngx_table((key, True if value is None else value) for key, value in args)


def headers_table(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``ngx.req.get_headers()``: lower-case names; a repeated header is a list."""
    return _headers_table(list(items))


def query_table(args: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """``ngx.req.get_uri_args()``: a bare flag is ``True``, a repeated key a list."""
    return _query_table(list(args))


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


def _head_size(first_line: str, headers: list[tuple[str, str]]) -> int:
    """Bytes of a head: names and the first line latin-1 (one byte a character, an
    unencodable one replaced by one ``?``), values UTF-8."""
    size = len(first_line) + 4 + 4 * len(headers)
    for name, value in headers:
        size += len(name) + (len(value) if value.isascii() else len(value.encode("utf-8")))
    return size


def _int_or(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


class _Fields:
    """What the basic serializer reports for one request, before any shaping."""

    def __init__(self, ctx: Any) -> None:
        uri = _request_uri(ctx)
        self.uri = uri
        self.req_headers: list[tuple[str, str]] = ctx.headers.items()
        self.resp_headers: list[tuple[str, str]] = ctx.response_headers.items()
        status = int(ctx.status or 0)
        self.status = status
        request_ms = _int_or(getattr(ctx, "request_latency", None), 0)
        self.request_ms = request_ms
        upstream_ms = getattr(ctx, "upstream_latency", None)
        if isinstance(upstream_ms, int | float) and getattr(ctx, "upstream_url", None):
            self.waiting = int(upstream_ms)
            self.kong = max(0, request_ms - self.waiting)
        else:
            self.waiting = -1
            self.kong = _int_or(getattr(ctx, "proxy_latency", None), request_ms)
        method = ctx.method
        self.method = method
        self.request: dict[str, Any] = {
            "uri": uri,
            "request_uri": f"{ctx.scheme}://{request_host(ctx)}:{ctx.server_port}{uri}",
            "querystring": _query_table(ctx.query),
            "method": method,
            "headers": _headers_table(self.req_headers),
            "size": _head_size(f"{method} {uri} HTTP/1.1", self.req_headers)
            + _int_or(getattr(ctx, "request_size", None), 0),
        }
        self.response: dict[str, Any] = {
            "status": status,
            "headers": _headers_table(self.resp_headers),
            "size": _head_size(f"HTTP/1.1 {status} {_REASONS.get(status, '')}", self.resp_headers)
            + _int_or(getattr(ctx, "response_size", None), 0),
        }


def _api_fields(api: Any) -> dict[str, Any]:
    # a Lua table has no nil fields: NULL columns are absent, as in the Admin API
    return {k: v for k, v in api.items() if v is not None}


def basic_serialize(ctx: Any) -> dict[str, Any]:
    """The basic serializer's message for one finished request."""
    f = _Fields(ctx)
    message: dict[str, Any] = {
        "request": f.request,
        "response": f.response,
        "latencies": {"kong": f.kong, "proxy": f.waiting, "request": f.request_ms},
        "api": _api_fields(ctx.api),
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


#: json.dumps(separators=(",", ":"), ensure_ascii=False, default=str), built once: json.dumps
#: builds an encoder per call when given options.  No circular check: what is encoded here is
#: a serializer's message (or a plugin's), never self-referencing.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=str, check_circular=False
)
#: json's own string escaping when ensure_ascii is off (C): what _dumps does to a str
_quote = json.encoder.encode_basestring
#: the C encoder _ENCODER.encode makes on every call (json.encoder.JSONEncoder.iterencode),
#: made once with the same arguments; None where json has no C accelerator
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_ITERENCODE: Any = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(None, str, _quote, None, ":", ",", False, False, True)
)


def _dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)``."""
    if _ITERENCODE is not None:
        return "".join(_ITERENCODE(value, 0))
    return _ENCODER.encode(value)


def _json_value(value: Any) -> str:
    return _quote(value) if type(value) is str else _dumps(value)


def encode(message: Any) -> bytes:
    """Compact JSON, as cjson wrote it (non-ASCII kept as UTF-8)."""
    return _dumps(message).encode("utf-8")


#: FrozenRow's own classes (one per shape) and the other row types seen: is it one
_FROZEN_TYPES: dict[type[Any], bool] = {}


def _is_frozen(row: Any) -> bool:
    """Whether ``row`` is a FrozenRow (without the ABC's isinstance on every request)."""
    cls = type(row)
    known = _FROZEN_TYPES.get(cls)
    if known is None:
        known = issubclass(cls, FrozenRow)
        if len(_FROZEN_TYPES) < 1024:
            _FROZEN_TYPES[cls] = known
    return known


def _counts(table: dict[int, tuple[Any, str]]) -> dict[int, int]:
    """Each entry's row's reference count (the same code measures the probe below)."""
    return {key: sys.getrefcount(entry[0]) for key, entry in table.items()}


#: the count of a row that only its entry holds (compiled and pure code count differently)
_ALONE = _counts({0: (object(), "")})[0]


class RowJson:
    """A field's JSON for immutable rows (FrozenRow), kept by the row's identity.

    Cached rows are never changed in place (kongtx.store.rows): a changed API or
    credential is a new row object (the router is rebuilt after an ``apis`` change,
    the node cache reloads an invalidated credential), so an entry is valid as long as
    its row is the same object.  An entry holds its row, so its id cannot be reused
    while the entry lives; sweeps (on misses, every miss while the table is small,
    every ``len / 16`` misses when it is large) drop the entries whose row nothing but
    the table holds any more: an entry dies with its row.  Other rows (a dict: a test's,
    a row holding a list) are encoded every time.
    """

    def __init__(self, make: Callable[[Any], str], limit: int = 512) -> None:
        self._make = make
        #: entries kept at most (all dropped when full: more hot rows are re-encoded)
        self.limit = limit
        #: id(row) -> (row, its JSON)
        self.entries: dict[int, tuple[Any, str]] = {}
        self._misses = 0

    def json(self, row: Any) -> str:
        """``make(row)``, from the table when this very row was seen before."""
        if not _is_frozen(row):
            return self._make(row)
        key = id(row)
        entries = self.entries
        entry = entries.get(key)
        if entry is not None and entry[0] is row:
            return entry[1]
        text = self._make(row)
        self._misses += 1
        if self._misses * 16 >= len(entries) or len(entries) >= self.limit:
            self._sweep()
        self.entries[key] = (row, text)
        return text

    def _sweep(self) -> None:
        self._misses = 0
        for key, count in _counts(self.entries).items():
            if count <= _ALONE:
                del self.entries[key]
        if len(self.entries) >= self.limit:
            self.entries.clear()


def _api_json(api: Any) -> str:
    return _dumps(_api_fields(api))


def _entity_json(credential: Any) -> str:
    return (
        f'{{"id":{_json_value(credential.get("id"))},'
        f'"consumer_id":{_json_value(credential.get("consumer_id"))}}}'
    )


#: the ``api`` field of each API row, the ``authenticated_entity`` of each credential
API_JSON = RowJson(_api_json)
ENTITY_JSON = RowJson(_entity_json)


def basic_json(ctx: Any) -> bytes:
    """``encode(basic_serialize(ctx))``, the same bytes with less work per request.

    The message is written field by field in basic_serialize's order; the ``api``
    and ``authenticated_entity`` JSON once per row (:class:`RowJson`).
    """
    f = _Fields(ctx)
    credential = ctx.credential
    entity = "" if credential is None else f',"authenticated_entity":{ENTITY_JSON.json(credential)}'
    # '{"request":{...},"response":{...}}' without its closing brace, then the rest
    head = _dumps({"request": f.request, "response": f.response})
    text = (
        f"{head[:-1]},"
        f'"latencies":{{"kong":{f.kong},"proxy":{f.waiting},"request":{f.request_ms}}},'
        f'"api":{API_JSON.json(ctx.api)},"client_ip":{_json_value(ctx.client_ip)},'
        f'"started_at":{int(ctx.started_at * 1000)}{entity}}}'
    )
    return text.encode("utf-8")


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
