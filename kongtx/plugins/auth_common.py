# -*- test-case-name: tests.unit.test_plugin_key_auth -*-
"""What the authentication plugins share: cached lookups, consumer headers, ``anonymous``.

Why one module: key-auth, basic-auth, hmac-auth, jwt, oauth2 and ldap-auth all end
the same way (SPEC §4.1): the consumer's ``X-Consumer-*`` headers go upstream
(dropped when the value is null, so a client can never smuggle its own), and
``ctx.consumer``/``ctx.credential`` are set so that lower-priority plugins get
the consumer's own configuration.  Every credential and consumer is read through
the node cache under SPEC §7.4's keys (:func:`consumer_key`...), which
:mod:`kongtx.invalidation` clears after each committed change, so a deleted or
changed credential stops working on the very next request.

The ``anonymous`` option comes from Kong 0.10: when a plugin is configured with
a consumer id as ``anonymous``, a request it cannot authenticate goes on as that
consumer (with ``X-Anonymous-Consumer: true``) instead of being rejected, and a
request an earlier auth plugin already authenticated is left alone.  Several auth
plugins configured that way on one API accept a request that any one of them
accepts (a logical OR).

Reading and checking a client's secret (basic-auth, ldap-auth) is
:mod:`kongtx.plugins.auth_secrets`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.logger import Logger

from kongtx.log import logger
from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.store.interface import Row, RowView
from kongtx.store.schemas import Field, is_uuid

__all__ = [
    "ANONYMOUS_HEADER",
    "ANONYMOUS_LOWER",
    "CLIENT_CANNOT_SEND_LOWER",
    "CONSUMER_CUSTOM_ID",
    "CONSUMER_ID",
    "CONSUMER_USERNAME",
    "CREDENTIAL_USERNAME",
    "INTERNAL_ERROR",
    "AuthPlugin",
    "Lookups",
    "anonymous_field",
    "check_anonymous",
    "consumer_headers",
    "consumer_key",
    "set_consumer",
    "set_or_clear",
]

CONSUMER_ID = "X-Consumer-ID"
CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
CONSUMER_USERNAME = "X-Consumer-Username"
CREDENTIAL_USERNAME = "X-Credential-Username"
ANONYMOUS_HEADER = "X-Anonymous-Consumer"

#: Headers only an auth plugin may set: removed from the client's request when the
#: first auth plugin identifies it (the X-Consumer-* ones are always set or removed).
CLIENT_CANNOT_SEND = (
    CREDENTIAL_USERNAME,
    "X-Authenticated-Scope",
    "X-Authenticated-Userid",
    "X-Consumer-Groups",
)

#: Kong's fixed body for an unexpected error (the real one goes to the log)
INTERNAL_ERROR: Mapping[str, str] = {"message": "An unexpected error occurred"}


def consumer_key(consumer_id: str) -> str:
    """``consumers:<id>``: the cache key of a consumer row (SPEC §7.4)."""
    return f"consumers:{consumer_id}"


def check_anonymous(value: Any, values: dict[str, Any]) -> str | None:
    """``anonymous`` is empty (no fallback) or a consumer id (Kong 0.10's check)."""
    if value in (None, "") or is_uuid(value):
        return None
    return "the anonymous user must be empty or a valid uuid"


def anonymous_field() -> Field:
    """The ``anonymous`` config field every auth plugin carries (Kong 0.10).

    No default (Kong 0.10's was ``""``): a config that does not set it reads back
    exactly as Kong 0.9's did.
    """
    return Field(type="string", func=check_anonymous)


def set_or_clear(ctx: RequestContext, name: str, value: Any) -> None:
    """Set an upstream header, or drop it when the value is null (Kong's ``set_header(nil)``)."""
    if value is None or value == "":
        ctx.headers.remove(name)
    else:
        ctx.headers.set(name, str(value))


#: lower-cased, for the one removal pass of :func:`set_consumer`
CLIENT_CANNOT_SEND_LOWER = frozenset(name.lower() for name in CLIENT_CANNOT_SEND)
_CONSUMER_HEADERS = (
    (CONSUMER_ID, CONSUMER_ID.lower(), "id"),
    (CONSUMER_CUSTOM_ID, CONSUMER_CUSTOM_ID.lower(), "custom_id"),
    (CONSUMER_USERNAME, CONSUMER_USERNAME.lower(), "username"),
)
ANONYMOUS_LOWER = ANONYMOUS_HEADER.lower()


def consumer_headers(consumer: RowView | None) -> tuple[set[str], list[tuple[str, str]]]:
    """The consumer's ``X-Consumer-*`` headers: the lower-case names dropped (its null
    columns: Kong's ``set_header(nil)``) and the ``(name, value)`` pairs set."""
    found = consumer or {}
    drop: set[str] = set()
    values: list[tuple[str, str]] = []
    for name, lname, column in _CONSUMER_HEADERS:
        value = found.get(column)
        if value is None or value == "":
            drop.add(lname)
        else:
            values.append((name, str(value)))
    return drop, values


def set_consumer(ctx: RequestContext, consumer: RowView | None, credential: RowView | None) -> None:
    """Record who the request is from and tell the upstream (SPEC §4.1 common headers).

    ``credential`` is None for the anonymous consumer (``X-Anonymous-Consumer: true``);
    ``consumer`` is None for ldap-auth, whose credentials belong to no consumer.

    The headers end as if each were set or removed in turn; what is removed goes in
    one pass when the headers can (the proxy's ``HeaderList.remove_all``).
    """
    drop, values = consumer_headers(consumer)
    if ctx.consumer is None and ctx.credential is None:
        # the first plugin to identify this request: identity headers the client sent
        # itself must not reach the upstream (a later plugin keeps an earlier one's)
        drop.update(CLIENT_CANNOT_SEND_LOWER)
    if credential is None:
        values.append((ANONYMOUS_HEADER, "true"))
    else:
        drop.add(ANONYMOUS_LOWER)
    headers = ctx.headers
    remove_all = getattr(headers, "remove_all", None)
    if remove_all is not None:
        remove_all(drop)
    else:
        for lname in drop:
            headers.remove(lname)
    for name, value in values:
        headers.set(name, value)
    ctx.consumer = consumer or None
    ctx.credential = credential


class Lookups:
    """Credential and consumer reads through the node cache (SPEC §7.4 keys).

    Misses are cached too (as negative entries): a credential created later
    clears its key (:mod:`kongtx.invalidation` treats creates like updates), so a
    client hammering an unknown key costs one datastore read, not one per request.
    """

    def __init__(self, services: PluginServices | None) -> None:
        if services is None:
            raise ValueError("authentication plugins need the node's services (dao, cache)")
        self.cache = services.cache
        self.dao = services.dao

    def peek(self, key: str) -> tuple[bool, Any]:
        """``(hit, value)`` from the cache only (the synchronous hot path)."""
        hit, value = self.cache.peek(key)
        return hit, value

    async def row(self, key: str, collection: str, filters: Mapping[str, Any]) -> RowView | None:
        """The row of ``collection`` matching the unique ``filters``, cached under ``key``."""
        dao = self.dao
        value = await self.cache.get_or_load(key, lambda: dao.find(collection, dict(filters)))
        return value  # type: ignore[no-any-return]

    async def consumer(self, consumer_id: str) -> RowView | None:
        """The consumer row with this id (``consumers:<id>``).

        The cached row's ``id`` is ``consumer_id`` itself (the credential's string),
        not the equal copy the datastore read made: one string per consumer in the
        cache instead of two (issue 8: 100,000 credentials and their consumers).
        """
        dao = self.dao

        async def load() -> Row | None:
            row: Row | None = await dao.find("consumers", {"id": consumer_id})
            if row is not None and row.get("id") == consumer_id:
                row = dict(row)
                row["id"] = consumer_id
            return row

        value = await self.cache.get_or_load(consumer_key(consumer_id), load)
        return value  # type: ignore[no-any-return]

    def peek_consumer(self, consumer_id: str) -> tuple[bool, RowView | None]:
        """:meth:`consumer` from the cache only."""
        hit, value = self.peek(consumer_key(consumer_id))
        return hit, value

    async def rows(self, key: str, collection: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every row of ``collection`` matching ``filters``, cached as one list under ``key``."""
        dao = self.dao

        async def load() -> list[Row]:
            return list(await dao.find_all(collection, dict(filters)))

        value = await self.cache.get_or_load(key, load, negative=False)
        return value  # type: ignore[no-any-return]


class AuthPlugin(BasePlugin, metaclass=ABCMeta):
    """Base of the authentication handlers: anonymous fallback, OR semantics, lookups.

    Subclasses implement :meth:`authenticate` and end it with :meth:`success` or
    :meth:`reject`.
    """

    PRIORITY: ClassVar[int] = 1000
    _log: ClassVar[Logger] = logger()

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.lookups = Lookups(services)
        self.anonymous = str(config.get("anonymous") or "")
        self.hide_credentials = bool(config.get("hide_credentials"))

    def access(self, ctx: RequestContext) -> PhaseResult:
        if self.anonymous and ctx.credential is not None:
            # an earlier auth plugin accepted the request and this one would only fall
            # back to anonymous: several auth plugins with ``anonymous`` form an OR
            return None
        return self.authenticate(ctx)

    @abstractmethod
    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        """Check the request's credentials; respond, or set the consumer."""

    def success(self, ctx: RequestContext, consumer: RowView | None, credential: RowView) -> None:
        """The request is authenticated as ``consumer`` with ``credential``."""
        set_consumer(ctx, consumer, credential)

    def reject(
        self,
        ctx: RequestContext,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PhaseResult:
        """Refuse the request, or let it through as the ``anonymous`` consumer."""
        if not self.anonymous:
            if body is None and status == 401:
                body = {"message": "Unauthorized"}
            ctx.respond(status, body, headers)
            return None
        hit, consumer = self.lookups.peek_consumer(self.anonymous)
        if hit and consumer is not None:
            set_consumer(ctx, consumer, None)
            return None
        return self._as_anonymous(ctx)

    async def _as_anonymous(self, ctx: RequestContext) -> None:
        consumer = await self.lookups.consumer(self.anonymous)
        if consumer is None:
            self._log.error(
                "anonymous consumer {consumer_id} of plugin {plugin} not found",
                consumer_id=self.anonymous,
                plugin=type(self).__module__,
            )
            ctx.respond(500, INTERNAL_ERROR)
            return
        set_consumer(ctx, consumer, None)

    async def reject_async(
        self,
        ctx: RequestContext,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """:meth:`reject` from a coroutine."""
        pending = self.reject(ctx, status, body, headers)
        if pending is not None:
            await pending
