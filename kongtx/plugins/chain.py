# -*- test-case-name: tests.unit.test_plugin_runtime -*-
"""A compiled chain: the plugins of one API in priority order, and the phases run over them.

Built by :meth:`kongtx.plugins.runtime.PluginRuntime.chain_for` (which resolves
the configurations); shared by every request to the API.  What it runs, slot by
slot and per consumer, is its :class:`~kongtx.plugins.entries.Lineup`
(:mod:`kongtx.plugins.entries`); this module runs the phases over it.

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

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, gatherResults

from kongtx.log import logger
from kongtx.plugins.base import RequestContext
from kongtx.plugins.entries import Lineup, Plan, PluginEntry, Slot, may_filter_body
from kongtx.store.interface import RowView

if TYPE_CHECKING:
    from kongtx.plugins.runtime import PluginRuntime

__all__ = ["STATE_KEY", "Chain"]

#: ``ctx.shared`` key holding the chain's per-request bookkeeping.
STATE_KEY = "kongtx.plugins.runtime"


class _RequestState:
    """Per request: which entries ran their access phase, and how far access got."""

    __slots__ = ("ran", "reached")

    def __init__(self) -> None:
        self.ran: list[PluginEntry] = []
        self.reached = 0


class _CertificateRequest:
    """The :class:`kongtx.plugins.base.CertificateContext` given to certificate phases."""

    __slots__ = ("api", "chosen", "sni")

    def __init__(self, sni: str, api: RowView) -> None:
        self.sni = sni
        self.api = api
        self.chosen: tuple[bytes, bytes] | None = None

    def set_certificate(self, cert_der: bytes, key_der: bytes) -> None:
        self.chosen = (cert_der, key_der)


class Chain:
    """The plugins of one API in priority order, and the phases run over them.

    Per-request bookkeeping lives in ``ctx.shared[STATE_KEY]``.
    """

    _logger = logger()

    __slots__ = ("_filters_body", "_lineup", "_slots", "api", "cache_size", "idle")

    def __init__(self, runtime: PluginRuntime, api: RowView, slots: Sequence[Slot]) -> None:
        self._lineup = lineup = Lineup(runtime, api["id"], slots)
        self._slots = lineup.slots
        #: no plugin configured for the API or globally: no phase can ever do anything
        #: (nothing runs access, so no consumer is set, so no consumer's config applies)
        self.idle = not lineup.base_plan
        #: some plugin of the chain may filter the body: else each chunk goes as it is,
        #: without a look at the request's state
        self._filters_body = any(may_filter_body(slot) for slot in self._slots)
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
        consumer = ctx.consumer
        if consumer is None:
            # Without a consumer only the slots with an API-or-global entry run (the
            # others wait for a consumer's config), until a plugin sets one.
            return self._access_planned(ctx, state, None, self._lineup.base_plan)
        return self._access_from(ctx, state, 0)

    def _access_from(
        self, ctx: RequestContext, state: _RequestState, i: int
    ) -> Awaitable[None] | None:
        """Access phases from slot ``i`` on, each with the consumer's config if it has one."""
        consumer = ctx.consumer
        lineup = self._lineup
        if consumer is not None:
            plan = lineup.plan_for(consumer, i)
            if plan is not None:
                return self._access_planned(ctx, state, consumer, plan)
        # No plan (no consumer, or a lookup not cached yet): slot by slot, until one waits.
        slots = self._slots
        count = len(slots)
        while i < count:
            found, entry = lineup.entry_cached(ctx, slots[i])
            if not found:
                return self._access_async(ctx, state, None)
            i += 1
            state.reached = i
            if entry is None:
                continue
            state.ran.append(entry)
            result = entry.handler.access(ctx) if entry.has_access else None
            if result is not None:
                return self._access_async(ctx, state, result)
            if ctx.responded:
                return None
        return None

    def _access_planned(
        self,
        ctx: RequestContext,
        state: _RequestState,
        consumer: RowView | None,
        plan: Plan,
    ) -> Awaitable[None] | None:
        """:meth:`_access_from` with the entries for ``consumer`` known (``None``: the
        API's and global ones); a plugin that sets or changes the consumer sends the
        rest back to :meth:`_access_from`."""
        ran = state.ran
        for i, entry in plan:
            state.reached = i + 1
            ran.append(entry)
            result = entry.handler.access(ctx) if entry.has_access else None
            if result is not None:
                return self._access_async(ctx, state, result)
            if ctx.responded:
                return None
            if ctx.consumer is not consumer:
                return self._access_from(ctx, state, i + 1)
        state.reached = len(self._slots)
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
            entry = await self._lineup.entry_for(ctx, slot)
            state.reached += 1
            if entry is None:
                continue
            state.ran.append(entry)
            result = entry.handler.access(ctx)
            if result is not None:
                await result
            if ctx.responded:
                return

    # ------------------------------------------------------ response phases

    def header_filter(self, ctx: RequestContext) -> Awaitable[None] | None:
        """Header filters of the plugins that ran access, in order (Kong semantics)."""
        state: _RequestState | None = ctx.shared.get(STATE_KEY)
        if state is None:
            return None
        ran = state.ran
        for index, entry in enumerate(ran):
            if not entry.has_header_filter:
                continue
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
        if not self._filters_body:
            return chunk
        state: _RequestState | None = ctx.shared.get(STATE_KEY)
        if state is None:
            return chunk
        for entry in state.ran:
            if entry.has_body_filter:
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
        lineup = self._lineup
        for i in range(state.reached, len(slots)):
            try:
                found, late = lineup.entry_cached(ctx, slots[i])
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
                entry = await self._lineup.entry_for(ctx, slot)
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
        if not entry.has_log:
            return
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
