# -*- test-case-name: tests.unit.test_admin_routing -*-
"""The Admin API: one leaf Resource with a method/path route table (SPEC §1).

Why a table and not ``putChild``: Kong's routes are dynamic (``/apis/{name or
id}/plugins/{id}``, one set per credential plugin), the 405/404 rules are about
the *table* (a path that exists but does not declare the method is 405, one that
does not exist is 404), and the trailing-slash rule is about paths, not children.
Everything that happens before a route runs (CORS preflight, 415, body parsing,
413) and everything after it (DAO error -> status and body, SPEC §1.2) lives
here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import CancelledError

from kongtx.admin.forms import (
    BODY_METHODS,
    FormError,
    check_content_type,
    parse_body,
    parse_query_string,
    read_body,
)
from kongtx.admin.routes import (
    apis,
    cluster,
    consumers,
    credentials,
    plugins,
    root,
    upstream_health,
    upstreams,
)
from kongtx.admin.routes import cache as cache_routes
from kongtx.admin.routes import config as config_routes
from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, lua_text
from kongtx.balancer.health import HealthChecks
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.config import Config
from kongtx.dao import DAO
from kongtx.declarative import DeclarativeState
from kongtx.errors import (
    ConflictError,
    DaoError,
    DatabaseError,
    EntityError,
    ForeignKeyError,
    NotFoundError,
    PluginExistsError,
    SchemaError,
)
from kongtx.http.resource import AsyncResource, HTTPRequest, json_bytes
from kongtx.log import logger
from kongtx.plugins.registry import PluginRegistry

#: Methods refused on entity routes in DB-less mode (``database = off``).
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def read_only_message(method: str, path: str) -> dict[str, str]:
    """The 405 body of an entity write in DB-less mode (docs/dbless.md)."""
    return {
        "message": f"cannot {method} {path} in DB-less mode (database = off): "
        "POST /config replaces the whole configuration"
    }


#: Kong's CORS preflight answer, given to any OPTIONS before routing (SPEC §1.1).
CORS_PREFLIGHT_HEADERS = {
    b"Access-Control-Allow-Methods": b"GET,HEAD,PUT,PATCH,POST,DELETE",
    b"Access-Control-Allow-Headers": b"Content-Type",
}


class NodeInfo(Protocol):
    """What the Admin API needs to know about the node it runs in (kongtx.node).

    ``name`` and ``hostname`` are read-only here (plain attributes satisfy them).
    """

    @property
    def name(self) -> str:
        """This node's cluster name."""
        ...

    @property
    def hostname(self) -> str:
        """The machine's hostname, shown by ``GET /``."""
        ...

    async def members(self) -> list[dict[str, Any]]:
        """The cluster members: ``name``, ``address`` (``ip:port``) and ``status``."""
        ...

    def server_stats(self) -> dict[str, int]:
        """stub_status counters: ``connections_active``, ``connections_reading``,
        ``connections_writing``, ``connections_waiting``, ``connections_accepted``,
        ``connections_handled``, ``total_requests``."""
        ...

    async def join(self, address: str) -> None:
        """Join the cluster member at ``address``; ``ValueError(msg)`` -> 400."""
        ...

    async def force_leave(self, name: str) -> None:
        """Force member ``name`` out of the cluster; ``ValueError(msg)`` -> 400."""
        ...

    @property
    def health_checks(self) -> HealthChecks | None:
        """Target health (kongtx.balancer.health); None: no balancer in this process."""
        ...


def error_reply(error: Exception) -> Reply | None:
    """SPEC §1.2: the status and body of a refusal; ``None`` when it is a bug."""
    if isinstance(error, HTTPError | FormError):
        return Reply(error.status, error.body)
    if not isinstance(error, DaoError):
        return None
    if isinstance(error, SchemaError):
        return Reply(400, dict(error.fields))
    if isinstance(error, EntityError):
        return Reply(400, {"message": error.message})
    if isinstance(error, PluginExistsError):
        return Reply(409)
    if isinstance(error, ConflictError):
        return Reply(409, {error.field: f"already exists with value '{lua_text(error.value)}'"})
    if isinstance(error, ForeignKeyError):
        return Reply(404, {error.field: f"does not exist with value '{lua_text(error.value)}'"})
    if isinstance(error, NotFoundError):
        return Reply(404, NOT_FOUND)
    if isinstance(error, DatabaseError):
        return Reply(503, {"message": "The datastore is unavailable"})
    return None


class AdminResource(AsyncResource):
    """The whole Admin API of one node."""

    log = logger()
    default_headers: Mapping[bytes, bytes] = {b"Access-Control-Allow-Origin": b"*"}

    def __init__(
        self,
        dao: DAO,
        cache: Cache,
        config: Config,
        registry: PluginRegistry,
        node: NodeInfo,
        clock: Clock,
    ) -> None:
        super().__init__()
        self.dao = dao
        self.cache = cache
        self.config = config
        self.registry = registry
        self.node = node
        self.clock = clock
        #: DB-less mode: the in-memory configuration ``POST /config`` replaces, and
        #: entity routes are read-only; None when the node has a datastore.
        self.declarative = DeclarativeState(dao, cache) if config.database == "off" else None
        entity_routes = [
            *apis.routes(self),
            *plugins.routes(self),
            *consumers.routes(self),
            *credentials.routes(self),
            *upstreams.routes(self),
        ]
        self._entity_templates = frozenset(r.template for r in entity_routes)
        self.routes: list[Route] = [
            *root.routes(self),
            *entity_routes,
            *cache_routes.routes(self),
            *cluster.routes(self),
            *config_routes.routes(self),
            *upstream_health.routes(self),
        ]

    def is_cancellable(self, request: HTTPRequest) -> bool:
        """Reads stop when the client leaves; writes finish (their cache invalidation too)."""
        return request.method in (b"GET", b"HEAD")

    def find_route(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for a raw path; ``/apis/`` is ``/apis`` (Kong's default-route retry)."""
        # Every route is declared without a trailing slash, so Kong's "retry with one
        # added" can never match: trying the path as sent, then without it, is enough.
        candidates = [path]
        if len(path) > 1 and path.endswith("/"):
            candidates.append(path[:-1])
        for candidate in candidates:
            for r in self.routes:
                args = r.match(candidate)
                if args is not None:
                    return r, args
        return None

    async def handle(self, request: HTTPRequest) -> None:
        """Preflight, 415, route, parse, run, and map refusals to SPEC §1.2."""
        method = request.method.decode("ascii", errors="replace").upper()
        if method == "OPTIONS":
            self.respond(request, 204, None, CORS_PREFLIGHT_HEADERS)
            return
        try:
            reply = await self._dispatch(request, method)
        except CancelledError:
            raise
        except Exception as error:
            mapped = error_reply(error)
            if mapped is None:
                raise
            if isinstance(error, DatabaseError):
                self.log.warn(
                    "datastore unavailable during {method} {uri}: {error}",
                    method=method,
                    uri=request.uri,
                    error=error.message,
                )
            reply = mapped
        self._send(request, reply)

    async def _dispatch(self, request: HTTPRequest, method: str) -> Reply:
        raw_ct = request.getHeader(b"content-type")
        content_type = None if raw_ct is None else raw_ct.decode("latin-1")
        path = request.path.decode("latin-1")
        found = self.find_route(path)
        if found is None or method not in found[0].bodyless:
            check_content_type(method, content_type)
        if found is None:
            raise HTTPError(404, NOT_FOUND)
        route, args = found
        handler = route.methods.get(method)
        if handler is None:
            raise HTTPError(405, {"message": "Method not allowed"})
        if (
            self.declarative is not None
            and method in WRITE_METHODS
            and route.template in self._entity_templates
        ):
            raise HTTPError(405, read_only_message(method, path))
        body: dict[str, Any] = {}
        if method in BODY_METHODS or method == "DELETE":
            body = parse_body(method, content_type, read_body(request.content))
        call = Call(
            request=request,
            method=method,
            path=path,
            args=args,
            # From the URI itself: Twisted folds POST form bodies into request.args.
            query=parse_query_string(request.uri.partition(b"?")[2]),
            body=body,
        )
        return await handler(call)

    def _send(self, request: HTTPRequest, reply: Reply) -> None:
        if reply.raw is not None:
            payload: bytes | None = reply.raw
        elif reply.body is None:
            payload = None
        else:
            payload = json_bytes(reply.body)
        self.respond(request, reply.status, payload, reply.headers)
