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

Why phases may return ``None``: when every lookup hits the cache and no plugin
needs to wait, a request runs through the chain with plain calls, without
allocating a single Deferred or coroutine (DESIGN.md §3).  The first phase or
lookup that must wait switches the rest of that phase to a coroutine.

Our deliberate difference (SPEC's top table): Kong 0.9 skipped the log phase of
every plugin after the one that rejected a request (Kong/kong#892), so loggers
never saw 401s or 429s.  Here :meth:`Chain.log` runs the log phase of every
plugin configured for the API (and the global ones), rejected requests included.
``header_filter`` and ``body_filter`` keep Kong's semantics: only plugins that ran
their access phase (so CORS headers still decorate a 401 from key-auth).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, gatherResults

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.invalidation import CHAIN_PREFIX, plugin_key
from kongtx.log import logger
from kongtx.plugins.base import BasePlugin, PluginServices, RequestContext
from kongtx.plugins.spec import PluginSpec
from kongtx.store.interface import Row

__all__ = ["STATE_KEY", "Chain", "PluginEntry", "PluginRuntime", "chain_key"]

#: ``ctx.shared`` key holding the runtime's per-request bookkeeping.
STATE_KEY = "kongtx.plugins.runtime"

#: How many handler instances are kept for reuse across chain rebuilds.
MAX_HANDLERS = 4096


def chain_key(api_id: str) -> str:
    """The cache key of an API's compiled chain (``plugins_chain:<api_id>``)."""
    return f"{CHAIN_PREFIX}{api_id}"


class PluginRows(Protocol):
    """What the runtime needs from the DAO: the plugin rows matching some columns."""

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> list[Row]:
        """Rows of ``collection`` whose columns equal ``filters``."""


class PluginSpecs(Protocol):
    """What the runtime needs from the registry: every loaded plugin's spec."""

    def specs(self) -> list[PluginSpec]:
        """Every loaded plugin (bundled and custom)."""


class PluginEntry:
    """One resolved configuration: the plugin row that won and its handler."""

    __slots__ = ("handler", "row", "spec")

    def __init__(self, spec: PluginSpec, row: Row, handler: BasePlugin) -> None:
        self.spec = spec
        self.row = row
        self.handler = handler

    def __repr__(self) -> str:
        return f"<PluginEntry {self.spec.name} id={self.row.get('id')}>"


class _Slot:
    """A plugin's place in a chain: its API-or-global entry, and whether it may
    have consumer-specific configurations."""

    __slots__ = ("base", "by_consumer", "spec")

    def __init__(self, spec: PluginSpec, base: PluginEntry | None) -> None:
        self.spec = spec
        self.base = base
        self.by_consumer = not spec.no_consumer


class _RequestState:
    """Per request: which entries ran their access phase, and how far access got."""

    __slots__ = ("ran", "reached")

    def __init__(self) -> None:
        self.ran: list[PluginEntry] = []
        self.reached = 0


class _CertificateRequest:
    """The :class:`kongtx.plugins.base.CertificateContext` given to certificate phases."""

    __slots__ = ("api", "chosen", "sni")

    def __init__(self, sni: str, api: Row) -> None:
        self.sni = sni
        self.api = api
        self.chosen: tuple[bytes, bytes] | None = None

    def set_certificate(self, cert_der: bytes, key_der: bytes) -> None:
        self.chosen = (cert_der, key_der)


def _rows_levels(api_id: str | None, consumer_id: str | None) -> tuple[tuple[Any, Any], ...]:
    """The (api_id, consumer_id) pairs tried in order for one lookup (SPEC §4.1)."""
    if consumer_id:
        return ((api_id, consumer_id), (None, consumer_id))
    return ((api_id, None), (None, None))


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
    ) -> Row | None:
        """The enabled plugin row that applies to (api, consumer), or ``None``.

        Kong's order: (api, consumer) → (consumer) when a consumer is known and
        the plugin accepts consumer configs, then (api) → global.  A disabled row
        does not mask a more general enabled one.
        """
        spec = self._spec(name)
        if consumer_id and (spec is None or not spec.no_consumer):
            for a, c in _rows_levels(api_id, consumer_id):
                row = await self._row(name, a, c)
                if row is not None and row.get("enabled"):
                    return row
        for a, c in _rows_levels(api_id, None):
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

    async def _row(self, name: str, api_id: str | None, consumer_id: str | None) -> Row | None:
        key = plugin_key(name, api_id, consumer_id)
        hit, row = self._cache.peek(key)
        if hit:
            return row  # type: ignore[no-any-return]
        return await self._cache.get_or_load(  # type: ignore[no-any-return]
            key, lambda: self._find_row(name, api_id, consumer_id)
        )

    async def _find_row(self, name: str, api_id: str | None, consumer_id: str | None) -> Row | None:
        """The row with exactly this (name, api_id, consumer_id), NULLs included.

        The datastore filters on the non-null ids only (as Kong's query does), so a
        row of a more specific level comes back too and is skipped here.
        """
        filters: dict[str, Any] = {"name": name}
        if api_id:
            filters["api_id"] = api_id
        if consumer_id:
            filters["consumer_id"] = consumer_id
        for row in await self._dao.find_all("plugins", filters):
            if (row.get("api_id") or None) == (api_id or None) and (
                row.get("consumer_id") or None
            ) == (consumer_id or None):
                return row
        return None

    def _entry(self, spec: PluginSpec, row: Row) -> PluginEntry:
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
        handler_cls = spec.handler
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

    def cached_chain(self, api: Row) -> Chain | None:
        """The API's compiled chain if the cache holds it (synchronous, hot path)."""
        hit, chain = self._cache.peek(chain_key(api["id"]))
        return chain if hit else None

    async def chain_for(self, api: Row) -> Chain:
        """The API's compiled chain, compiling it once on a miss."""
        key = chain_key(api["id"])
        hit, chain = self._cache.peek(key)
        if hit and chain is not None:
            return chain  # type: ignore[no-any-return]
        return await self._cache.get_or_load(  # type: ignore[no-any-return]
            key, lambda: self._compile(api), negative=False
        )

    async def _compile(self, api: Row) -> Chain:
        """Resolve every loaded plugin for (api, no consumer), highest priority first.

        Ties are broken by name: Kong's order among equal priorities was whatever
        its unstable sort gave; ours is deterministic.
        """
        api_id = api["id"]
        specs = sorted(self._registry.specs(), key=lambda s: (-s.priority, s.name))
        slots: list[_Slot] = []
        for spec in specs:
            if spec.handler is None:
                continue
            found, base = self.resolve_cached(spec, api_id, None)
            if not found:
                base = await self.resolve_entry(spec, api_id, None)
            if base is None and spec.no_consumer:
                continue  # can never run for this API
            slots.append(_Slot(spec, base))
        return Chain(self, api, slots)


class Chain:
    """The plugins of one API in priority order, and the phases run over them.

    Built by :meth:`PluginRuntime.chain_for`; shared by every request to the API.
    Per-request bookkeeping lives in ``ctx.shared[STATE_KEY]``.
    """

    _logger = logger()

    __slots__ = ("_runtime", "_slots", "api", "cache_size")

    def __init__(self, runtime: PluginRuntime, api: Row, slots: Sequence[_Slot]) -> None:
        self._runtime = runtime
        self._slots = tuple(slots)
        self.api = api
        #: weight for the cache's size bound (rows are shared with plugins:* entries)
        self.cache_size = 256 + 64 * len(self._slots)

    def entries(self) -> list[PluginEntry]:
        """The entries configured for the API without a consumer, in run order."""
        return [slot.base for slot in self._slots if slot.base is not None]

    def names(self) -> list[str]:
        """Names of :meth:`entries` (for logs and tests)."""
        return [entry.spec.name for entry in self.entries()]

    # -------------------------------------------------------------- access

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        """Run access phases in order until one responds; ``None`` if nothing waited."""
        state = _RequestState()
        ctx.shared[STATE_KEY] = state
        slots = self._slots
        runtime = self._runtime
        api_id = self.api["id"]
        count = len(slots)
        i = 0
        while i < count:
            slot = slots[i]
            entry = slot.base
            consumer = ctx.consumer
            if consumer is not None and slot.by_consumer:
                found, specific = runtime.resolve_cached(slot.spec, api_id, consumer["id"])
                if not found:
                    return self._access_async(ctx, state, None)
                if specific is not None:
                    entry = specific
            i += 1
            state.reached = i
            if entry is None:
                continue
            state.ran.append(entry)
            result = entry.handler.access(ctx)
            if result is not None:
                return self._access_async(ctx, state, result)
            if ctx.responded:
                return None
        return None

    async def _access_async(
        self, ctx: RequestContext, state: _RequestState, pending: Awaitable[None] | None
    ) -> None:
        if pending is not None:
            await pending
            if ctx.responded:
                return
        slots = self._slots
        while state.reached < len(slots):
            slot = slots[state.reached]
            entry = await self._entry_for(ctx, slot)
            state.reached += 1
            if entry is None:
                continue
            state.ran.append(entry)
            result = entry.handler.access(ctx)
            if result is not None:
                await result
            if ctx.responded:
                return

    async def _entry_for(self, ctx: RequestContext, slot: _Slot) -> PluginEntry | None:
        """The consumer-specific entry when there is one, else the API/global one."""
        consumer = ctx.consumer
        if consumer is not None and slot.by_consumer:
            specific = await self._runtime.resolve_entry(slot.spec, self.api["id"], consumer["id"])
            if specific is not None:
                return specific
        return slot.base

    def _entry_cached(self, ctx: RequestContext, slot: _Slot) -> tuple[bool, PluginEntry | None]:
        consumer = ctx.consumer
        if consumer is not None and slot.by_consumer:
            found, specific = self._runtime.resolve_cached(
                slot.spec, self.api["id"], consumer["id"]
            )
            if not found:
                return False, None
            if specific is not None:
                return True, specific
        return True, slot.base

    # ------------------------------------------------------ response phases

    def header_filter(self, ctx: RequestContext) -> Awaitable[None] | None:
        """Header filters of the plugins that ran access, in order (Kong semantics)."""
        state: _RequestState | None = ctx.shared.get(STATE_KEY)
        if state is None:
            return None
        ran = state.ran
        for index, entry in enumerate(ran):
            result = entry.handler.header_filter(ctx)
            if result is not None:
                return self._header_filter_async(ctx, ran, index + 1, result)
        return None

    async def _header_filter_async(
        self,
        ctx: RequestContext,
        ran: list[PluginEntry],
        start: int,
        pending: Awaitable[None],
    ) -> None:
        await pending
        for entry in ran[start:]:
            result = entry.handler.header_filter(ctx)
            if result is not None:
                await result

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        """Pass one response chunk through the plugins that ran access; what to send."""
        state: _RequestState | None = ctx.shared.get(STATE_KEY)
        if state is None:
            return chunk
        for entry in state.ran:
            chunk = entry.handler.body_filter(ctx, chunk, last)
        return chunk

    # ------------------------------------------------------------------ log

    def log(self, ctx: RequestContext) -> Deferred[None] | None:
        """Run every configured plugin's log phase; errors are logged, never raised.

        Plugins the request never reached (one before them responded) run their log
        phase too, with the configuration they would have had (SPEC's top table).
        Log phases that wait are started at once and run side by side; the result
        (``None`` when none waited) fires when they all finished.
        """
        state: _RequestState | None = ctx.shared.get(STATE_KEY)
        if state is None:
            state = _RequestState()
        waiting: list[Deferred[None]] = []
        for entry in state.ran:
            self._log_one(ctx, entry, waiting)
        slots = self._slots
        for i in range(state.reached, len(slots)):
            try:
                found, late = self._entry_cached(ctx, slots[i])
            except Exception:
                self._logger.failure(
                    "resolving plugin {name} for the log phase failed", name=slots[i].spec.name
                )
                continue
            if not found:
                waiting.append(ensureDeferred(self._log_rest(ctx, i)))
                break
            if late is not None:
                self._log_one(ctx, late, waiting)
        if not waiting:
            return None
        if len(waiting) == 1:
            return waiting[0]
        done: Deferred[Any] = gatherResults(waiting)
        return done.addCallback(lambda _: None)

    async def _log_rest(self, ctx: RequestContext, start: int) -> None:
        """Log phases of unreached plugins from ``start``, loading their configs."""
        waiting: list[Deferred[None]] = []
        for slot in self._slots[start:]:
            try:
                entry = await self._entry_for(ctx, slot)
            except CancelledError:
                raise
            except Exception:
                self._logger.failure(
                    "resolving plugin {name} for the log phase failed", name=slot.spec.name
                )
                continue
            if entry is not None:
                self._log_one(ctx, entry, waiting)
        for d in waiting:
            await d

    def _log_one(
        self, ctx: RequestContext, entry: PluginEntry, waiting: list[Deferred[None]]
    ) -> None:
        try:
            result = entry.handler.log(ctx)
        except Exception:
            self._logger.failure("log phase of plugin {name} failed", name=entry.spec.name)
            return
        if result is not None:
            waiting.append(ensureDeferred(self._guard_log(entry, result)))

    async def _guard_log(self, entry: PluginEntry, pending: Awaitable[None]) -> None:
        try:
            await pending
        except CancelledError:
            raise
        except Exception:
            self._logger.failure("log phase of plugin {name} failed", name=entry.spec.name)

    # ---------------------------------------------------------- certificate

    def certificate(self, sni: str) -> tuple[bytes, bytes] | None:
        """Run certificate phases for a handshake whose SNI named this API.

        Returns the ``(cert_der, key_der)`` a plugin chose (the ssl plugin), or
        ``None`` for the default certificate.  Synchronous: the SNI callback of a
        TLS server cannot wait.
        """
        request = _CertificateRequest(sni, self.api)
        for slot in self._slots:
            entry = slot.base
            if entry is None:
                continue
            try:
                entry.handler.certificate(request)
            except Exception:
                self._logger.failure(
                    "certificate phase of plugin {name} failed", name=entry.spec.name
                )
        return request.chosen
