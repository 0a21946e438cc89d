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

from collections.abc import Callable
from typing import Any, Final

from kongtx.plugins.log_tables import (
    LastHeaders,
    LastQuery,
    dumps,
    encode,
    headers_json_like,
    headers_table,
    json_value,
    ngx_headers,
    ngx_query,
    query_json_like,
    query_table,
    quote,
)
from kongtx.plugins.row_json import RowJson, is_frozen

__all__ = [
    "CONTEXT_JSON",
    "basic_json",
    "basic_serialize",
    "encode",
    "headers_table",
    "host_of",
    "latencies",
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


def latencies(
    request_ms: int, upstream_ms: int | None, proxied: bool, proxy_ms: int | None
) -> tuple[int, int, int]:
    """``(kong, proxy, request)`` in ms: proxy (the upstream's wait) is -1 when never
    proxied, and kong what the request took besides it (else the proxy latency)."""
    if upstream_ms is not None and proxied:
        return max(0, request_ms - upstream_ms), upstream_ms, request_ms
    return (request_ms if proxy_ms is None else proxy_ms), -1, request_ms


def _latencies(ctx: Any) -> tuple[int, int, int]:
    """:func:`latencies` of a context read attribute by attribute (a field may be unset)."""
    upstream_ms: Any = getattr(ctx, "upstream_latency", None)
    proxy_ms: Any = getattr(ctx, "proxy_latency", None)
    return latencies(
        _int_or(getattr(ctx, "request_latency", None), 0),
        int(upstream_ms) if _is_number(upstream_ms) else None,
        bool(getattr(ctx, "upstream_url", None)),
        int(proxy_ms) if _is_number(proxy_ms) else None,
    )


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
            "querystring": ngx_query(ctx.query),
            "method": method,
            "headers": ngx_headers(self.req_headers),
            "size": _head_size(f"{method} {uri} HTTP/1.1", self.req_headers)
            + _int_or(getattr(ctx, "request_size", None), 0),
        }
        self.response: dict[str, Any] = {
            "status": status,
            "headers": ngx_headers(self.resp_headers),
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


def _api_json(api: Any) -> str:
    return dumps(_api_fields(api))


def _entity_json(credential: Any) -> str:
    return (
        f'{{"id":{json_value(credential.get("id"))},'
        f'"consumer_id":{json_value(credential.get("consumer_id"))}}}'
    )


#: the ``api`` field of each API row, the ``authenticated_entity`` of each credential
API_JSON = RowJson(_api_json)
ENTITY_JSON = RowJson(_entity_json)


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
        _triples(ctx.headers.items()),
        _int_or(getattr(ctx, "request_size", None), 0),
        int(ctx.status or 0),
        _triples(ctx.response_headers.items()),
        _int_or(getattr(ctx, "response_size", None), 0),
        kong,
        waiting,
        request_ms,
        ctx.api,
        ctx.client_ip,
        int(ctx.started_at * 1000),
        ctx.credential,
    )


def _triples(pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(lower-case name, name, value)`` of each header pair (what :func:`message_json`
    reads, as the proxy's HeaderList keeps its headers)."""
    return [(name.lower(), name, value) for name, value in pairs]


def message_json(
    uri: str,
    method: Any,
    origin: str,
    query: list[tuple[str, str | None]],
    request_items: list[tuple[str, str, str]],
    request_body: int,
    status: int,
    response_items: list[tuple[str, str, str]],
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
    :func:`latencies`', the headers ``(lower-case name, name, value)`` triples."""
    memo = _LAST
    request_headers, request_head = headers_json_like(request_items, memo.request_headers)
    response_headers, response_head = headers_json_like(response_items, memo.response_headers)
    # len(f"{method} {uri} HTTP/1.1") + its CRLF and the end's
    request_size = len(method) + len(uri) + 14 + request_head + request_body
    response_size = _status_line_size(status) + response_head + response_body
    if credential is None:
        entity = ""
    elif credential is memo.credential:
        entity = memo.entity
    else:
        entity = f',"authenticated_entity":{ENTITY_JSON.json(credential)}'
        if is_frozen(credential):  # immutable: its JSON holds while it is the same row
            memo.credential = credential
            memo.entity = entity
    if api is memo.api:
        api_json = memo.api_json
    else:
        api_json = API_JSON.json(api)
        if is_frozen(api):
            memo.api = api
            memo.api_json = api_json
    if uri != memo.uri or origin != memo.origin:
        memo.uri = uri
        memo.origin = origin
        memo.start = f'{{"request":{{"uri":{quote(uri)},"request_uri":{quote(origin + uri)},'
    if client_ip != memo.client_ip or type(client_ip) is not str:
        memo.client_ip = client_ip if type(client_ip) is str else None
        memo.client_ip_json = json_value(client_ip)
    text = (
        f"{memo.start}"
        f'"querystring":{query_json_like(query, memo.query)},"method":{json_value(method)},'
        f'"headers":{request_headers},"size":{request_size}}},'
        f'"response":{{"status":{status},"headers":{response_headers},"size":{response_size}}},'
        f'"latencies":{{"kong":{kong},"proxy":{waiting},"request":{request_ms}}},'
        f'"api":{api_json},"client_ip":{memo.client_ip_json},'
        f'"started_at":{started_ms}{entity}}}'
    )
    return text.encode("utf-8")


#: no row yet
_NOTHING: Final = object()


class _Last:
    """What the last message had (a node's requests mostly repeat their client's):
    its headers and query args (:mod:`~kongtx.plugins.log_tables`'s ``Last*``), URI and
    origin (the message's start, escaped once), client address, and its immutable API
    and credential rows' JSON (no table lookup while they stay the same rows)."""

    __slots__ = (
        "api",
        "api_json",
        "client_ip",
        "client_ip_json",
        "credential",
        "entity",
        "origin",
        "query",
        "request_headers",
        "response_headers",
        "start",
        "uri",
    )

    def __init__(self) -> None:
        self.request_headers = LastHeaders()
        self.response_headers = LastHeaders()
        self.query = LastQuery()
        self.uri = ""
        self.origin = ""
        self.start = '{"request":{"uri":"","request_uri":"",'
        self.client_ip: str | None = None
        self.client_ip_json = ""
        self.api: Any = _NOTHING
        self.api_json = ""
        self.credential: Any = _NOTHING
        self.entity = ""


_LAST: Final = _Last()
