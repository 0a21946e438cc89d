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
from typing import Any, Final

from kongtx.store.rows import FrozenRow

__all__ = [
    "CONTEXT_JSON",
    "basic_json",
    "basic_serialize",
    "capture_request_body",
    "capture_response_chunk",
    "encode",
    "headers_table",
    "host_of",
    "is_frozen",
    "message_json",
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


#: Host header values -> their ``$host`` (a node serves few hosts); bounded
_HOSTS: Final[dict[str, str]] = {}
_HOSTS_LIMIT: Final = 1024


def request_host(ctx: Any) -> str:
    """nginx's ``$host``: the Host header without its port, lower-cased, else the server address."""
    value: str | None = ctx.headers.get("host")
    if not value:
        return str(getattr(ctx, "server_addr", "") or "")
    return host_of(value)


def host_of(value: str) -> str:
    """``$host`` of a (non-empty) Host header: its port cut, lower-cased (remembered)."""
    known = _HOSTS.get(value)
    if known is not None:
        return known
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end >= 0 else host
    else:
        host = host.split(":", 1)[0]
    if len(_HOSTS) >= _HOSTS_LIMIT:
        _HOSTS.clear()
    _HOSTS[value] = host
    return host


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


def _is_number(value: Any) -> bool:
    """``isinstance(value, int | float)``, the usual cases without building the union."""
    if value is None:
        return False
    kind = type(value)
    return kind is int or kind is float or isinstance(value, int | float)


def _int_or(value: Any, default: int) -> int:
    return int(value) if _is_number(value) else default


def _latencies(ctx: Any) -> tuple[int, int, int]:
    """``(kong, proxy, request)`` in ms: proxy (the upstream's wait) is -1 when never proxied."""
    request_ms = _int_or(getattr(ctx, "request_latency", None), 0)
    upstream_ms: Any = getattr(ctx, "upstream_latency", None)
    if _is_number(upstream_ms) and getattr(ctx, "upstream_url", None):
        waiting = int(upstream_ms)
        return max(0, request_ms - waiting), waiting, request_ms
    return _int_or(getattr(ctx, "proxy_latency", None), request_ms), -1, request_ms


def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {_REASONS.get(status, '')}"


#: status -> len(_status_line(status)) + 4 (the line's CRLF and the head's end)
_STATUS_LINE_SIZE: Final[dict[int, int]] = {}


def _status_line_size(status: int) -> int:
    size = _STATUS_LINE_SIZE.get(status)
    if size is None:
        size = len(_status_line(status)) + 4
        if len(_STATUS_LINE_SIZE) < 1024:
            _STATUS_LINE_SIZE[status] = size
    return size


class _Fields:
    """What the basic serializer reports for one request, before any shaping."""

    def __init__(self, ctx: Any) -> None:
        uri = _request_uri(ctx)
        self.uri = uri
        self.req_headers: list[tuple[str, str]] = ctx.headers.items()
        self.resp_headers: list[tuple[str, str]] = ctx.response_headers.items()
        status = int(ctx.status or 0)
        self.status = status
        self.kong, self.waiting, self.request_ms = _latencies(ctx)
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
            "size": _head_size(_status_line(status), self.resp_headers)
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
_quote: Final = json.encoder.encode_basestring
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


def is_frozen(row: Any) -> bool:
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
        if not is_frozen(row):
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


class _Key:
    """One lower-case header name in a headers object's JSON: its members by value
    (``,"name":"value"`` and the value's bytes, made once for a repeating value), and
    the call that last saw the name (a name seen twice in one call is a repeated header)."""

    __slots__ = ("key", "members", "seen")

    def __init__(self, lname: str) -> None:
        #: ``,"name":``
        self.key = "," + _quote(lname) + ":"
        #: value -> (``,"name":"value"``, len(value) in UTF-8): bounded, short values only
        self.members: dict[str, tuple[str, int]] = {}
        self.seen = 0

    def member(self, value: str) -> tuple[str, int]:
        """``(',"name":"value"', the value's bytes)``, remembered for a short value."""
        member = (
            self.key + _quote(value),
            len(value) if value.isascii() else len(value.encode("utf-8")),
        )
        if len(value) <= _VALUE_MAX:
            members = self.members
            if len(members) >= _VALUES_LIMIT:
                members.clear()  # a value that changes on every request (a counter, a date)
            members[value] = member
        return member


class _Calls:
    """How many headers objects were encoded (a native counter: a module global's
    writes would be dict operations)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


#: a header name as received -> the :class:`_Key` of its lower-case name (every spelling
#: of a name shares one): most headers of a node's traffic repeat (Host, Content-Type,
#: Server, Via...) and most of their values too, so each name is lowered and escaped
#: once, each value once per name; bounded (cleared when full)
_KEYS: Final[dict[str, _Key]] = {}
#: lower-case name -> its _Key (the spellings' shared one)
_LOWER_KEYS: Final[dict[str, _Key]] = {}
_KEYS_LIMIT: Final = 2048
#: values kept per name at most, and the longest kept
_VALUES_LIMIT: Final = 64
_VALUE_MAX: Final = 200
_CALLS: Final = _Calls()


def _key_of(name: str) -> _Key:
    if len(_KEYS) >= _KEYS_LIMIT or len(_LOWER_KEYS) >= _KEYS_LIMIT:
        _KEYS.clear()
        _LOWER_KEYS.clear()
    lname = name.lower()
    key = _LOWER_KEYS.get(lname)
    if key is None:
        key = _LOWER_KEYS[lname] = _Key(lname)
    _KEYS[name] = key
    return key


def _headers_json(items: list[tuple[str, str]]) -> tuple[str, int]:
    """``_dumps(_headers_table(items))``, and the bytes the headers take in a head
    (:func:`_head_size` without the first line's): one pass, one join."""
    if not items:
        return "{}", 0
    calls = _CALLS
    stamp = calls.count + 1
    calls.count = stamp
    keys = _KEYS
    size = 4 * len(items)
    repeated = False
    parts: list[str] = ["{"]
    for name, value in items:
        key = keys.get(name)
        if key is None:
            key = _key_of(name)
        if key.seen == stamp:
            repeated = True
        key.seen = stamp
        member = key.members.get(value)
        if member is None:
            member = key.member(value)
        parts.append(member[0])
        size += len(name) + member[1]
    if repeated:
        # a repeated header: its values become a list (rare)
        return _dumps(_headers_table(items)), size
    parts[1] = parts[1][1:]  # the first member has no comma before it
    parts.append("}")
    return "".join(parts), size


def _query_json(args: list[tuple[str, str | None]]) -> str:
    """``_dumps(_query_table(args))``."""
    parts: list[str] = []
    keys: set[str] = set()
    for key, value in args:
        keys.add(key)
        parts.append(f"{_quote(key)}:{'true' if value is None else _quote(value)}")
    if len(keys) < len(args):
        return _dumps(_query_table(args))
    return "{" + ",".join(parts) + "}"


#: context types -> their own basic_json (the proxy registers its ProxyContext's, which
#: reads the fields natively and calls :func:`message_json`); any other context is read
#: attribute by attribute
CONTEXT_JSON: Final[dict[type[Any], Callable[[Any], bytes]]] = {}


def basic_json(ctx: Any) -> bytes:
    """``encode(basic_serialize(ctx))``, the same bytes with less work per request.

    The message is written field by field in basic_serialize's order, strings escaped
    by json's own function, without building the message's dicts; the ``api`` and
    ``authenticated_entity`` JSON once per row (:class:`RowJson`).
    """
    native = CONTEXT_JSON.get(type(ctx))
    if native is not None:
        return native(ctx)
    kong, waiting, request_ms = _latencies(ctx)
    return message_json(
        _request_uri(ctx),
        ctx.method,
        f"{ctx.scheme}://{request_host(ctx)}:{ctx.server_port}",
        ctx.query,
        ctx.headers.items(),
        _int_or(getattr(ctx, "request_size", None), 0),
        int(ctx.status or 0),
        ctx.response_headers.items(),
        _int_or(getattr(ctx, "response_size", None), 0),
        kong,
        waiting,
        request_ms,
        ctx.api,
        ctx.client_ip,
        int(ctx.started_at * 1000),
        ctx.credential,
    )


def message_json(
    uri: str,
    method: Any,
    origin: str,
    query: list[tuple[str, str | None]],
    request_items: list[tuple[str, str]],
    request_body: int,
    status: int,
    response_items: list[tuple[str, str]],
    response_body: int,
    kong: int,
    waiting: int,
    request_ms: int,
    api: Any,
    client_ip: Any,
    started_ms: int,
    credential: Any,
) -> bytes:
    """:func:`basic_json` of a request's fields: ``origin`` is ``scheme://host:port``
    (request_uri without the URI), the sizes the bodies', the latencies
    :func:`_latencies`'."""
    request_headers, request_head = _headers_json(request_items)
    response_headers, response_head = _headers_json(response_items)
    # len(f"{method} {uri} HTTP/1.1") + its CRLF and the end's
    request_size = len(method) + len(uri) + 14 + request_head + request_body
    response_size = _status_line_size(status) + response_head + response_body
    entity = "" if credential is None else f',"authenticated_entity":{ENTITY_JSON.json(credential)}'
    text = (
        f'{{"request":{{"uri":{_quote(uri)},"request_uri":{_quote(origin + uri)},'
        f'"querystring":{_query_json(query)},"method":{_json_value(method)},'
        f'"headers":{request_headers},"size":{request_size}}},'
        f'"response":{{"status":{status},"headers":{response_headers},"size":{response_size}}},'
        f'"latencies":{{"kong":{kong},"proxy":{waiting},"request":{request_ms}}},'
        f'"api":{API_JSON.json(api)},"client_ip":{_json_value(client_ip)},'
        f'"started_at":{started_ms}{entity}}}'
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
