# -*- test-case-name: tests.unit.test_plugin_runtime -*-
"""Which plugins run for a request, with which configuration, in which order (SPEC §4.1).

How the proxy uses it (the whole API)::

    chain = runtime.cached_chain(api) or await runtime.chain_for(api)
    pending = chain.access(ctx)              # None, or an awaitable to await
    if pending is not None:
        await pending
    # ... ctx.responded? send the Kong response; else go upstream ...
    pending = chain.header_filter(ctx)       # response headers known (upstream's or Kong's)
    if pending is not None:
        await pending
    for chunk, last in body:
        chunk = chain.body_filter(ctx, chunk, last)
    chain.log(ctx)                           # after the response finished; never raises

    # in the TLS SNI callback (synchronous: a handshake cannot wait)
    chosen = chain.certificate(sni)          # (cert_der, key_der) or None -> default cert

Why a compiled chain: the ordered list of (plugin spec, handler) configured for an
API without a consumer is the same for every request, so it is resolved once and
kept in the node cache under ``plugins_chain:<api_id>`` (cleared by
:mod:`kongtx.invalidation` when a plugin row of that API, or any global one,
changes).  Consumer-specific configurations are only known once an auth plugin
has identified the consumer, so they are looked up lazily during the access
phase, exactly where Kong does (``kong/core/plugins_iterator.lua``).

The chain itself and its phases are :mod:`kongtx.plugins.chain`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, FirstError, gatherResults

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.invalidation import chain_key, plugin_key
from kongtx.plugins.base import PluginServices
from kongtx.plugins.chain import STATE_KEY, Chain
from kongtx.plugins.entries import PluginEntry, Slot
from kongtx.plugins.spec import PluginSpec
from kongtx.store.interface import RowView

__all__ = ["STATE_KEY", "Chain", "PluginEntry", "PluginRuntime", "chain_key"]

#: How many handler instances are kept for reuse across chain rebuilds.
MAX_HANDLERS = 4096


class PluginRows(Protocol):
    """What the runtime needs from the DAO: the plugin rows matching some columns."""

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> list[RowView]:
        """Rows of ``collection`` whose columns equal ``filters``."""


class PluginSpecs(Protocol):
    """What the runtime needs from the registry: every loaded plugin's spec."""

    def specs(self) -> list[PluginSpec]:
        """Every loaded plugin (bundled and custom)."""


def _rows_levels(api_id: str | None, consumer_id: str | None) -> tuple[tuple[Any, Any], ...]:
    """The (api_id, consumer_id) pairs tried in order for one lookup (SPEC §4.1)."""
    if consumer_id:
        return ((api_id, consumer_id), (None, consumer_id))
    return ((api_id, None), (None, None))


def _exact(
    rows: list[RowView], name: str, api_id: str | None, consumer_id: str | None
) -> RowView | None:
    """The row of ``name`` with exactly this (api_id, consumer_id), NULLs included."""
    for row in rows:
        if (
            row.get("name") == name
            and (row.get("api_id") or None) == (api_id or None)
            and (row.get("consumer_id") or None) == (consumer_id or None)
        ):
            return row
    return None


class PluginRuntime:
    """Resolves plugin configurations and compiles the per-API chains.

    Args:
        dao: where plugin rows come from (``DAO.find_all``).
        cache: the node cache; plugin rows are cached under Kong's keys
            ``plugins:<name>[:<api_id>][:<consumer_id>]``, misses as negative entries.
        registry: the loaded plugins (``PluginRegistry``).
        clock: the node's clock.
        services: what handlers get besides their config (built from the
            above when not given).
    """

    def __init__(
        self,
        dao: PluginRows,
        cache: Cache,
        registry: PluginSpecs,
        clock: Clock,
        services: PluginServices | None = None,
    ) -> None:
        self._dao = dao
        self._cache = cache
        self._registry = registry
        self.clock = clock
        #: handed to every handler (dao/cache/clock/reactor/node config)
        self.services = services or PluginServices(
            dao=dao, cache=cache, clock=clock, reactor=clock.reactor
        )
        # row id -> entry; reused while the row's config is unchanged (an LRU bound
        # keeps rows deleted on other nodes from accumulating)
        self._entries: OrderedDict[str, PluginEntry] = OrderedDict()

    # ------------------------------------------------------------ resolution

    async def resolve(
        self, name: str, api_id: str | None, consumer_id: str | None = None
    ) -> RowView | None:
        """The enabled plugin row that applies to (api, consumer), or ``None``.

        Kong's order: (api, consumer) → (consumer) when a consumer is known and
        the plugin accepts consumer configs, then (api) → global.  A disabled row
        does not mask a more general enabled one.
        """
        spec = self._spec(name)
        levels = _rows_levels(api_id, None)
        if consumer_id and (spec is None or not spec.no_consumer):
            levels = _rows_levels(api_id, consumer_id) + levels
        for a, c in levels:
            row = await self._row(name, a, c)
            if row is not None and row.get("enabled"):
                return row
        return None

    def _spec(self, name: str) -> PluginSpec | None:
        for spec in self._registry.specs():
            if spec.name == name:
                return spec
        return None

    def resolve_cached(
        self, spec: PluginSpec, api_id: str | None, consumer_id: str | None
    ) -> tuple[bool, PluginEntry | None]:
        """The entry for (api, consumer) → (consumer), or (api) → global when
        ``consumer_id`` is None, from the cache only.

        Returns ``(False, None)`` when a lookup is not cached (the caller goes async),
        else ``(True, entry or None)``.
        """
        peek = self._cache.peek
        for a, c in _rows_levels(api_id, consumer_id):
            hit, row = peek(plugin_key(spec.name, a, c))
            if not hit:
                return False, None
            if row is not None and row.get("enabled"):
                return True, self._entry(spec, row)
        return True, None

    async def resolve_entry(
        self, spec: PluginSpec, api_id: str | None, consumer_id: str | None
    ) -> PluginEntry | None:
        """:meth:`resolve_cached`, loading what the cache misses."""
        for a, c in _rows_levels(api_id, consumer_id):
            row = await self._row(spec.name, a, c)
            if row is not None and row.get("enabled"):
                return self._entry(spec, row)
        return None

    async def _prefetch_api_rows(self, api_id: str, names: list[str]) -> None:
        """Load the API-level rows ``plugins:<name>:<api>`` of ``names`` with one query.

        A new API misses that key for every loaded plugin: one query for all of
        them instead of one each (on PostgreSQL, each lookup's round trip and the
        driver's work were most of a new API's first request).  Every key's load
        is registered in the cache *before* the query starts, so an invalidation
        that lands meanwhile drops the result as it would for a single lookup.
        """
        peek = self._cache.peek
        missing = [n for n in names if not peek(plugin_key(n, api_id, None))[0]]
        if len(missing) < 2:
            return
        ready: list[Deferred[list[RowView]]] = []

        def loader(name: str) -> Any:
            async def load() -> RowView | None:
                waiter: Deferred[list[RowView]] = Deferred()
                ready.append(waiter)
                return _exact(await waiter, name, api_id, None)

            return load

        loads = [
            Deferred.fromCoroutine(
                self._cache.get_or_load(plugin_key(name, api_id, None), loader(name))
            )
            for name in missing
        ]
        try:
            rows = await self._dao.find_all("plugins", {"api_id": api_id})
        except Exception as e:
            for waiter in ready:
                waiter.errback(e)
        else:
            for waiter in ready:
                waiter.callback(rows)
        try:
            await gatherResults(loads, consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()

    async def _row(self, name: str, api_id: str | None, consumer_id: str | None) -> RowView | None:
        key = plugin_key(name, api_id, consumer_id)
        hit, row = self._cache.peek(key)
        if hit:
            return row  # type: ignore[no-any-return]
        return await self._cache.get_or_load(  # type: ignore[no-any-return]
            key, lambda: self._find_row(name, api_id, consumer_id)
        )

    async def _find_row(
        self, name: str, api_id: str | None, consumer_id: str | None
    ) -> RowView | None:
        """The row with exactly this (name, api_id, consumer_id), NULLs included.

        The datastore filters on the non-null ids only (as Kong's query does), so a
        row of a more specific level comes back too and is skipped here.
        """
        filters: dict[str, Any] = {"name": name}
        if api_id:
            filters["api_id"] = api_id
        if consumer_id:
            filters["consumer_id"] = consumer_id
        return _exact(await self._dao.find_all("plugins", filters), name, api_id, consumer_id)

    def _entry(self, spec: PluginSpec, row: RowView) -> PluginEntry:
        """The entry (and handler) for ``row``, built once per row and config."""
        row_id = str(row.get("id"))
        entries = self._entries
        entry = entries.get(row_id)
        if entry is not None:
            if entry.row is row:
                entries.move_to_end(row_id)
                return entry
            if entry.spec is spec and entry.row.get("config") == row.get("config"):
                # same config reloaded (another row of the API changed): keep the handler
                entry = PluginEntry(spec, row, entry.handler)
                entries[row_id] = entry
                entries.move_to_end(row_id)
                return entry
        handler_cls = spec.load_handler()
        if handler_cls is None:
            raise LookupError(f"plugin {spec.name!r} has no request-time handler")
        handler = handler_cls(row.get("config") or {}, self.services)
        entry = PluginEntry(spec, row, handler)
        entries[row_id] = entry
        entries.move_to_end(row_id)
        while len(entries) > MAX_HANDLERS:
            entries.popitem(last=False)
        return entry

    # ---------------------------------------------------------------- chains

    def cached_chain(self, api: RowView) -> Chain | None:
        """The API's compiled chain if the cache holds it (synchronous)."""
        return self.chain_at(chain_key(api["id"]))

    def chain_at(self, key: str) -> Chain | None:
        """:meth:`cached_chain` by the chain's cache key (the hot path: the router's
        ``ApiTarget.chain_key``, made once per API, its hash computed once)."""
        hit, chain = self._cache.peek(key)
        return chain if hit else None

    async def chain_for(self, api: RowView) -> Chain:
        """The API's compiled chain, compiling it once on a miss."""
        key = chain_key(api["id"])
        hit, chain = self._cache.peek(key)
        if hit and chain is not None:
            return chain  # type: ignore[no-any-return]
        return await self._cache.get_or_load(  # type: ignore[no-any-return]
            key, lambda: self._compile(api), negative=False
        )

    async def _compile(self, api: RowView) -> Chain:
        """Resolve every loaded plugin for (api, no consumer), highest priority first.

        Ties are broken by name: Kong's order among equal priorities was whatever
        its unstable sort gave; ours is deterministic.
        """
        api_id = api["id"]
        specs = sorted(self._registry.specs(), key=lambda s: (-s.priority, s.name))
        # Misses are loaded all at once, not one plugin after the other: a new API
        # misses ``plugins:<name>:<api>`` for every loaded plugin, and on a networked
        # datastore those lookups in sequence were most of a new API's first request.
        resolved: dict[str, PluginEntry | None] = {}
        loading: dict[str, Deferred[PluginEntry | None]] = {}
        await self._prefetch_api_rows(api_id, [s.name for s in specs if s.has_handler])
        for spec in specs:
            if not spec.has_handler:
                continue
            found, base = self.resolve_cached(spec, api_id, None)
            if found:
                resolved[spec.name] = base
            else:
                loading[spec.name] = Deferred.fromCoroutine(self.resolve_entry(spec, api_id, None))
        if loading:
            try:
                results = await gatherResults(list(loading.values()), consumeErrors=True)
            except FirstError as e:
                e.subFailure.raiseException()  # the first lookup's own error (e.g. the store's)
            resolved.update(zip(loading, results, strict=True))
        slots: list[Slot] = []
        for spec in specs:
            if spec.name not in resolved:
                continue  # no handler
            base = resolved[spec.name]
            if base is None and spec.no_consumer:
                continue  # can never run for this API
            slots.append(Slot(spec, base))
        return Chain(self, api, slots)
