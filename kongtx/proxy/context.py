"""What the proxy pipeline works with: :class:`ProxyContext`, one proxied request as
plugins see it (``kongtx.plugins.base.RequestContext``), and its serialization for the
log phase; then the request's targets: an absolute-form target split, and what goes
upstream for a context (SPEC §3.2).

What the pipeline is handed (the request a front-end parsed, the client side, the plugin
chains, the router's source) is :mod:`kongtx.proxy.incoming`, re-exported here.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any, Final

from kongtx import SERVER_NAME
from kongtx.plugins.log_serializer import CONTEXT_JSON, host_of, latencies, message_json
from kongtx.proxy.errors import JSON_TYPE, json_body
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.incoming import ApiSource as ApiSource
from kongtx.proxy.incoming import BodyStream as BodyStream
from kongtx.proxy.incoming import ChainSource as ChainSource
from kongtx.proxy.incoming import Downstream as Downstream
from kongtx.proxy.incoming import IncomingRequest as IncomingRequest
from kongtx.proxy.incoming import PluginChain as PluginChain
from kongtx.proxy.incoming import RouterSource as RouterSource
from kongtx.proxy.query import encode_args, encoded_query, query_args
from kongtx.proxy.request import UpstreamRequest, build_upstream_request
from kongtx.router import Match
from kongtx.store.interface import RowView

# --------------------------------------------------------------------- context


class ProxyContext:
    """One proxied request as plugins see it (``kongtx.plugins.base.RequestContext``).

    Also carries what the log phase reports (Kong's basic serializer): sizes,
    latencies, the upstream URL.
    """

    def __init__(
        self,
        api: RowView,
        match: Match,
        incoming: IncomingRequest,
        client_ip: str,
        path: str,
        raw_query: str,
        started: float,
    ) -> None:
        self.api = api
        self.match = match
        self.method = incoming.method
        self.scheme = incoming.scheme
        self.path = path
        self.raw_query = raw_query
        self.request_uri = incoming.uri
        self.http_version = incoming.http_version
        # The query args, the headers, ``shared`` and the response headers are made
        # when first asked for: a request no plugin looks at allocates none of them.
        self._query: list[tuple[str, str | None]] | None = None
        #: the client's headers (``incoming.headers``) until :attr:`headers` is asked
        #: for, which copies them: what plugins change is never the client's request
        self._headers: HeaderList = incoming.headers
        self._headers_copied = False
        self._shared: dict[str, Any] | None = None
        self._response_headers: HeaderList | None = None
        self.client_ip = client_ip
        self.peer_ip = incoming.peer_ip
        self.server_addr = incoming.server_addr
        self.server_port = incoming.server_port
        self.connection_id = incoming.connection_id
        self.connection_requests = incoming.connection_requests
        self.consumer: RowView | None = None
        self.credential: RowView | None = None
        self.status = 0
        self.upstream_url: str | None = None
        self.upstream_host: str | None = None
        #: epoch seconds when the request arrived
        self.started_at = started
        #: ms: start -> end of access phase; end of access -> upstream headers; total
        self.proxy_latency: int | None = None
        self.upstream_latency: int | None = None
        self.request_latency: int | None = None
        self.request_size = incoming.body_length
        self.response_size = 0
        self._incoming = incoming
        self._body: IO[bytes] | None = incoming.body
        self._body_length = incoming.body_length
        self._stream: BodyStream | None = incoming.stream
        if incoming.stream is not None and incoming.stream.declared_length is not None:
            self.request_size = incoming.stream.declared_length
        self._responded = False
        self._response_body: bytes = b""

    @property
    def headers(self) -> HeaderList:
        """The request's headers as plugins change them (a copy of the client's)."""
        if not self._headers_copied:
            self._headers = self._headers.copy()
            self._headers_copied = True
        return self._headers

    @headers.setter
    def headers(self, headers: HeaderList) -> None:
        self._headers = headers
        self._headers_copied = True

    @property
    def query(self) -> list[tuple[str, str | None]]:
        """The query args (decoded, ``ngx.req.get_uri_args``), as plugins change them."""
        query = self._query
        if query is None:
            query = self._query = query_args(self.raw_query)
        return query

    @query.setter
    def query(self, query: list[tuple[str, str | None]]) -> None:
        self._query = query

    def upstream_query(self) -> str:
        """The query string sent upstream (SPEC §3.2), re-encoded from the args."""
        query = self._query
        if query is None:
            return encoded_query(self.raw_query)  # untouched: the raw query's, remembered
        return encode_args(self.raw_query, query)

    @property
    def shared(self) -> dict[str, Any]:
        """Plugins' per-request values (``ngx.ctx``)."""
        shared = self._shared
        if shared is None:
            shared = self._shared = {}
        return shared

    @shared.setter
    def shared(self, shared: dict[str, Any]) -> None:
        self._shared = shared

    @property
    def response_headers(self) -> HeaderList:
        """The response's headers (the upstream's as relayed, or a generated answer's)."""
        headers = self._response_headers
        if headers is None:
            headers = self._response_headers = HeaderList()
        return headers

    @response_headers.setter
    def response_headers(self, headers: HeaderList) -> None:
        self._response_headers = headers

    async def read_body(self) -> bytes:
        """The whole request body (read from its spool; position restored).

        A body still streaming in is waited for and kept in memory from then on.
        """
        if self._stream is not None:
            data = await self._stream.read_all()
            self._stream = None
            self._body = io.BytesIO(data)
            self._body_length = self.request_size = len(data)
            return data
        body = self._body
        if body is None:
            return b""
        body.seek(0)
        data = body.read(self._body_length)
        body.seek(0)
        return data

    def set_body(self, body: bytes) -> None:
        """Replace the body sent upstream; its length frames it."""
        if self._stream is not None:
            self._stream.stopProducing()  # the client's body is replaced: drop it
            self._stream = None
        self._body = io.BytesIO(body)
        self._body_length = len(body)
        self.headers.remove("content-length")
        self.headers.remove("transfer-encoding")

    def set_upstream_host(self, host: str) -> None:
        self.upstream_host = host

    def respond(
        self,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A Kong-generated answer (a plugin stops the request)."""
        self._responded = True
        self.status = status
        out = HeaderList()
        if isinstance(body, Mapping):
            data = json_body(body)
            out.set("Content-Type", JSON_TYPE)
        else:
            data = body or b""
        for name, value in (headers or {}).items():
            out.set(name, value)
        out.set("Server", SERVER_NAME)
        self.response_headers = out
        self._response_body = data

    @property
    def responded(self) -> bool:
        return self._responded

    @property
    def body_stream(self) -> tuple[IO[bytes] | None, int]:
        """The (possibly replaced) request body and its length."""
        return self._body, self._body_length


def _basic_json(ctx: ProxyContext) -> bytes:
    """The basic log serializer's message of ``ctx`` (``log_serializer.basic_json``), its
    fields read natively (compiled: no attribute looked up by name) and the headers the
    client sent read without copying them when no plugin asked for them."""
    kong, waiting, request_ms = latencies(
        0 if ctx.request_latency is None else ctx.request_latency,
        ctx.upstream_latency,
        bool(ctx.upstream_url),
        ctx.proxy_latency,
    )
    headers = ctx._headers
    host = headers.get_lowered("host")
    uri = ctx.request_uri or (f"{ctx.path}?{ctx.raw_query}" if ctx.raw_query else ctx.path)
    last = _ORIGIN
    if (
        host != last.host
        or ctx.scheme != last.scheme
        or ctx.server_port != last.port
        or (not host and ctx.server_addr != last.addr)
    ):
        last.host = host
        last.scheme = ctx.scheme
        last.port = ctx.server_port
        last.addr = ctx.server_addr
        last.origin = (
            f"{ctx.scheme}://{host_of(host) if host else ctx.server_addr}:{ctx.server_port}"
        )
    return message_json(
        uri,
        ctx.method,
        last.origin,
        ctx.query,
        headers._items,
        ctx.request_size,
        ctx.status,
        ctx.response_headers._items,
        ctx.response_size,
        kong,
        waiting,
        request_ms,
        ctx.api,
        ctx.client_ip,
        int(ctx.started_at * 1000),
        ctx.credential,
    )


class _Origin:
    """The last logged request's origin (``scheme://$host:port``) and what it was made
    of: a client's requests repeat their Host header."""

    __slots__ = ("addr", "host", "origin", "port", "scheme")

    def __init__(self) -> None:
        self.host: str | None = None
        self.scheme = ""
        self.port = -1
        self.addr = ""
        self.origin = ""


_ORIGIN: Final = _Origin()

CONTEXT_JSON[ProxyContext] = _basic_json


# ------------------------------------------------------------------ the request's target


def split_absolute_form(target: str) -> tuple[str, str]:
    """``(host[:port], origin-form)`` of an absolute-form request target."""
    scheme_end = target.find("://")
    if scheme_end < 0:
        return "", target if target.startswith("/") else "/" + target
    rest = target[scheme_end + 3 :]
    cut = len(rest)
    for sep in ("/", "?"):
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority, origin = rest[:cut], rest[cut:]
    authority = authority.rsplit("@", 1)[-1]
    if not origin.startswith("/"):
        origin = "/" + origin
    return authority, origin


#: no query args (``upstream_request_of`` gives the query string encoded)
_NO_ARGS: Final[list[tuple[str, str | None]]] = []


def upstream_request_of(ctx: ProxyContext, keep_upgrade: bool) -> UpstreamRequest:
    """What goes upstream for ``ctx`` as the access phase left it (SPEC §3.2)."""
    req = build_upstream_request(
        api=ctx.api,
        match=ctx.match,
        method=ctx.method,
        uri=ctx.path,
        query=_NO_ARGS,
        query_string=ctx.upstream_query(),
        headers=ctx._headers,
        peer_ip=ctx.peer_ip,
        client_ip=ctx.client_ip,
        scheme=ctx.scheme,
        host_override=ctx.upstream_host,
        hop_by_hop=True,
        keep_upgrade=keep_upgrade,
    )
    ctx.upstream_url = req.url
    return req


def is_upgrade(headers: HeaderList) -> bool:
    """An upgrade request's headers: ``Upgrade`` and ``Connection: upgrade``."""
    if headers.get_lowered("upgrade") is None:
        return False
    return any("upgrade" in v.lower() for v in headers.get_all_lowered("connection"))
