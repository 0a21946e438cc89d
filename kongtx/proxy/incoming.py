"""What the proxy pipeline is handed: the request a front-end parsed
(:class:`IncomingRequest`, a body still arriving: :class:`BodyStream`), the client side
it writes to (:class:`Downstream`), the plugin chains (:class:`PluginChain`,
:class:`ChainSource`) and where the router comes from (:class:`RouterSource`).

Front-ends (``kongtx.proxy.fast``, ``kongtx.proxy.resource``) build an
:class:`IncomingRequest` and are a :class:`Downstream`; :mod:`kongtx.proxy.pipeline`
runs the request with a :class:`kongtx.proxy.context.ProxyContext`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import IO, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer

from kongtx.cache import Cache
from kongtx.proxy.headers import HeaderList
from kongtx.router import CACHE_KEY, Router
from kongtx.store.interface import RowView

__all__ = [
    "ApiSource",
    "BodyStream",
    "ChainSource",
    "Downstream",
    "IncomingRequest",
    "PluginChain",
    "RouterSource",
]


class Downstream(Protocol):
    """The client side of one request, as a front-end provides it."""

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Status line and headers (the front-end adds framing if none is given)."""

    def send_head_lowered(
        self, status: int, items: list[tuple[str, str, str]], reason: str
    ) -> None:
        """:meth:`send_head` of ``(lower-case name, name, value)`` triples (a relayed
        response's ``HeaderList``: no pair list made per response), with the
        upstream's own reason phrase when it has one (else "": the standard one)."""

    def write(self, data: bytes) -> None:
        """Body bytes."""

    def finish(self) -> None:
        """The response is complete."""

    def abort(self) -> None:
        """Cut the connection: the response cannot be completed honestly."""

    def register_producer(self, producer: IPushProducer) -> None:
        """Let the client's backpressure pause ``producer``."""

    def unregister_producer(self) -> None:
        """Undo :meth:`register_producer`."""

    def splice(self, tunnel: Any) -> None:
        """Hand the raw connection to ``tunnel`` (an upgraded WebSocket)."""

    @property
    def gone(self) -> bool:
        """The client disconnected."""


class IncomingRequest:
    """A parsed client request, front-end independent."""

    __slots__ = (
        "body",
        "body_length",
        "connection_id",
        "connection_requests",
        "headers",
        "http_version",
        "method",
        "peer_ip",
        "scheme",
        "server_addr",
        "server_port",
        "stream",
        "uri",
    )

    def __init__(
        self,
        method: str,
        uri: str,
        headers: HeaderList,
        peer_ip: str,
        scheme: str = "http",
        body: IO[bytes] | None = None,
        body_length: int = 0,
        server_addr: str = "",
        server_port: int = 0,
        connection_id: int = 0,
        connection_requests: int = 1,
        stream: BodyStream | None = None,
        http_version: str = "HTTP/1.1",
    ) -> None:
        #: a body still arriving from the client (large or chunked), else ``None``
        self.stream = stream
        #: the request line's version (``HTTP/1.0`` or ``HTTP/1.1``): hmac-auth signs it
        self.http_version = http_version
        self.server_addr = server_addr
        self.server_port = server_port
        self.connection_id = connection_id
        self.connection_requests = connection_requests
        self.method = method
        self.uri = uri
        self.headers = headers
        self.peer_ip = peer_ip
        self.scheme = scheme
        self.body = body
        self.body_length = body_length


class BodyStream(Protocol):
    """A request body still arriving from the client (``kongtx.proxy.http.BodyPipe``)."""

    #: the client's Content-Length, ``None`` for a chunked body
    declared_length: int | None
    received: int

    def startProducing(self, consumer: Any) -> Deferred[None]: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...
    async def read_all(self) -> bytes: ...


class PluginChain(Protocol):
    """The compiled plugins of one API (kongtx.plugins.runtime)."""

    #: no plugin of the API (nor a global one) would run: the pipeline skips the chain
    idle: bool

    def access(self, ctx: Any) -> Awaitable[None] | None: ...
    def header_filter(self, ctx: Any) -> Awaitable[None] | None: ...
    def body_filter(self, ctx: Any, chunk: bytes, last: bool) -> bytes: ...
    def log(self, ctx: Any) -> Awaitable[None] | None: ...


class ChainSource(Protocol):
    """Gives the plugin chain for an API (kongtx.plugins.runtime)."""

    def cached_chain(self, api: RowView) -> PluginChain | None: ...
    def chain_at(self, key: str) -> PluginChain | None: ...
    def chain_for(self, api: RowView) -> Awaitable[PluginChain]: ...


class ApiSource(Protocol):
    """What the router is loaded from (the DAO)."""

    def find_all(self, collection: str, filters: Mapping[str, Any]) -> Awaitable[list[RowView]]: ...


class RouterSource:
    """The router, kept in the node cache under ``ALL_APIS_BY_DIC``.

    Hot path: one synchronous ``peek``.  After an ``apis`` change the invalidation
    drops the key and the next request rebuilds the router (one datastore query,
    shared by every request that arrives meanwhile).
    """

    def __init__(self, cache: Cache, dao: ApiSource) -> None:
        self._cache = cache
        self._dao = dao

    def peek(self) -> Router | None:
        hit, value = self._cache.peek(CACHE_KEY)
        return value if hit and isinstance(value, Router) else None

    async def get(self) -> Router:
        router = self.peek()
        if router is not None:
            return router

        async def load() -> Router:
            apis = await self._dao.find_all("apis", {})
            return Router.build(apis)

        result: Router = await self._cache.get_or_load(CACHE_KEY, load, None, False)
        return result
