# -*- test-case-name: tests.unit.test_plugin_key_auth -*-
"""key-auth at request time: an API key from a header or the query string (SPEC §4.2).

This is the plugin on the benchmark's hot path: when the credential and its
consumer are cached, :meth:`Handler.authenticate` runs with plain calls and
allocates no Deferred; only a cache miss switches to a coroutine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kongtx.cache import Cache
from kongtx.plugins.auth_common import (
    ANONYMOUS_LOWER,
    CLIENT_CANNOT_SEND_LOWER,
    AuthPlugin,
    consumer_headers,
)
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.row_json import is_frozen
from kongtx.store.interface import RowView

REALM = 'Key realm="kong"'
DUPLICATE = {"message": "Duplicate API key found"}
NO_KEY = {"message": "No API key found in headers or querystring"}
INVALID = {"message": "Invalid authentication credentials"}


def credential_key(key: str) -> str:
    """``keyauth_credentials:<key>`` (SPEC §7.4)."""
    return f"keyauth_credentials:{key}"


#: consumers whose headers a handler keeps (then it starts over)
MAX_CONSUMERS = 1024
#: API keys whose cache keys a handler keeps (then it starts over)
MAX_KEYS: Final = 4096


class _ConsumerHeaders:
    """What :func:`~kongtx.plugins.auth_common.set_consumer` does for one consumer row
    authenticated with a credential, worked out once: an immutable row's columns
    cannot change (a changed consumer is a new row)."""

    def __init__(self, consumer: RowView) -> None:
        self.consumer = consumer
        nulls, values = consumer_headers(consumer)
        nulls.add(ANONYMOUS_LOWER)
        #: dropped when this plugin is the first to identify the request
        self.first: frozenset[str] = frozenset(nulls | CLIENT_CANNOT_SEND_LOWER)
        #: dropped when an earlier plugin did
        self.later: frozenset[str] = frozenset(nulls)
        self.values = values


class _KeyEntry:
    """One API key as sent: its credential's cache key, and from the credential row last
    found under it (an immutable row: a changed credential is a new row) its consumer's
    cache key and headers, so a request with a known key formats and hashes nothing."""

    __slots__ = ("cache_key", "consumer_key", "credential", "headers")

    def __init__(self, key: str) -> None:
        self.cache_key = credential_key(key)
        #: the FrozenRow :attr:`consumer_key` was made from (None: none yet)
        self.credential: Any = None
        self.consumer_key = ""
        #: the consumer headers last set for this key's consumer
        self.headers: _ConsumerHeaders | None = None


class _Duplicate(Exception):
    """The key was sent more than once under one name."""


class Handler(AuthPlugin):
    """The key-auth plugin's request-time half."""

    PRIORITY = 1000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        names = config.get("key_names") or ["apikey"]
        #: (name as configured, header spelling): nginx finds ``api_key`` as ``api-key`` too
        self.key_names: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (str(n), (str(n), str(n).replace("_", "-")) if "_" in str(n) else (str(n),))
            for n in names
        )
        cache = self.lookups.cache
        #: the node cache itself when it is one (compiled: a native call, no Lookups
        #: call in between); else (a stand-in cache) its ``peek`` is called
        self._cache: Cache | None = cache if isinstance(cache, Cache) else None
        #: consumer id -> its headers (see :class:`_ConsumerHeaders`)
        self._consumers: dict[str, _ConsumerHeaders] = {}
        #: API key -> what is known of it (see :class:`_KeyEntry`)
        self._keys: dict[str, _KeyEntry] = {}

    def access(self, ctx: RequestContext) -> PhaseResult:
        # AuthPlugin.access, here compiled (the hot path)
        if self.anonymous and ctx.credential is not None:
            return None
        return self.authenticate(ctx)

    def _find_key(self, ctx: RequestContext) -> str | None:
        """The first key among ``key_names`` (header first, then query), or None."""
        for name, spellings in self.key_names:
            for spelling in spellings:
                values = ctx.headers.get_all(spelling)
                if len(values) > 1:
                    raise _Duplicate()
                if values:
                    if self.hide_credentials:
                        ctx.headers.remove(spelling)
                        self._drop_query(ctx, name)
                    return values[0]
            found: str | None = None
            seen = False
            for k, v in ctx.query:
                if k == name:
                    if seen:
                        raise _Duplicate()
                    seen = True
                    found = v
            if found is not None:
                if self.hide_credentials:
                    self._drop_query(ctx, name)
                return found
        return None

    @staticmethod
    def _drop_query(ctx: RequestContext, name: str) -> None:
        if any(k == name for k, _ in ctx.query):
            ctx.query = [(k, v) for k, v in ctx.query if k != name]

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        try:
            key = self._find_key(ctx)
        except _Duplicate:
            return self.reject(ctx, 401, DUPLICATE)
        if key is None:
            return self.reject(ctx, 401, NO_KEY, {"WWW-Authenticate": REALM})
        entry = self._keys.get(key)
        hit, credential = self._peek_cached(
            credential_key(key) if entry is None else entry.cache_key
        )
        if hit:
            if credential is None:
                return self.reject(ctx, 403, INVALID)
            if entry is None:
                # remembered once it names a credential (not for every key a client tries)
                entry = self._key_entry(key)
            if entry.credential is not credential:
                entry.consumer_key = f"consumers:{credential['consumer_id']}"
                # a mutable row (not FrozenRow) is read again next time
                entry.credential = credential if is_frozen(credential) else None
                entry.headers = None
            found, consumer = self._peek_cached(entry.consumer_key)
            if found:
                return self._finish(ctx, credential, consumer, entry)
        return self._authenticate_async(ctx, key)

    def _key_entry(self, key: str) -> _KeyEntry:
        keys = self._keys
        if len(keys) >= MAX_KEYS:
            keys.clear()
        entry = keys[key] = _KeyEntry(key)
        return entry

    def _peek_cached(self, key: str) -> tuple[bool, Any]:
        cache = self._cache
        if cache is not None:
            return cache.peek(key)
        return self.lookups.cache.peek(key)  # type: ignore[no-any-return]

    async def _authenticate_async(self, ctx: RequestContext, key: str) -> None:
        credential = await self.lookups.row(
            credential_key(key), "keyauth_credentials", {"key": key}
        )
        if credential is None:
            await self.reject_async(ctx, 403, INVALID)
            return
        consumer = await self.lookups.consumer(credential["consumer_id"])
        pending = self._finish(ctx, credential, consumer, None)
        if pending is not None:
            await pending

    def _finish(
        self,
        ctx: RequestContext,
        credential: RowView,
        consumer: RowView | None,
        entry: _KeyEntry | None,
    ) -> PhaseResult:
        if consumer is None:
            # the credential outlived its consumer (a delete in flight): not valid
            return self.reject(ctx, 403, INVALID)
        if not is_frozen(consumer):
            self.success(ctx, consumer, credential)
            return None
        known = None if entry is None else entry.headers
        if known is None or known.consumer is not consumer:
            known = self._consumer_headers(consumer)
            if entry is not None:
                entry.headers = known
        # the end of auth_common.set_consumer, compiled, for the proxy's headers
        headers = ctx.headers
        remove_all = getattr(headers, "remove_all", None)
        if remove_all is None:
            self.success(ctx, consumer, credential)
            return None
        remove_all(known.first if ctx.consumer is None and ctx.credential is None else known.later)
        for name, value in known.values:
            headers.set(name, value)
        ctx.consumer = consumer
        ctx.credential = credential
        return None

    def _consumer_headers(self, consumer: RowView) -> _ConsumerHeaders:
        consumers = self._consumers
        consumer_id = str(consumer["id"])
        known = consumers.get(consumer_id)
        if known is None or known.consumer is not consumer:
            if len(consumers) >= MAX_CONSUMERS:
                consumers.clear()
            known = consumers[consumer_id] = _ConsumerHeaders(consumer)
        return known
