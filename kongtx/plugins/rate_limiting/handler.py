# -*- test-case-name: tests.unit.test_plugin_rate_limiting -*-
"""rate-limiting: fixed-window request quotas per consumer, credential or IP (SPEC §4.4).

Access phase: read the current usage of every configured period; if any
``limit - usage <= 0`` answer 429, else count this request in all six periods.
The ``X-RateLimit-Limit-<period>`` / ``X-RateLimit-Remaining-<period>`` headers
are computed in access and put on whatever response goes out (upstream's or
the 429) in header_filter.

Why the increment is awaited before the request goes upstream (Kong fired it
from a 0-delay timer): the promise is that nodes sharing ``cluster`` or
``redis`` counters let through at most the limit plus the requests in flight.
With a pool of datastore connections, a write left running behind the response
can land after many later reads on other connections, and the overshoot then
grows with the load instead of the concurrency (measured: 52 passed for a limit
of 30 with 6 clients on PostgreSQL).  Awaiting it costs one round-trip and
bounds the overshoot by the requests between their read and their write.  With
the ``local`` policy everything is synchronous: exact, and no Deferred on the
hot path.

Store or Redis errors: ``fault_tolerant`` proxies the request without headers
(and logs), otherwise the client gets a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError

from kongtx.log import logger
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.counter_slots import SlotTable
from kongtx.plugins.ratelimit_counters import LIFETIMES, PERIOD_INDEX, PERIODS, period_starts
from kongtx.plugins.ratelimit_local import ROW_CACHE, LocalCounters, ProcessCounters
from kongtx.plugins.ratelimit_policies import CountingPlugin, identifier_for
from kongtx.plugins.ratelimit_table import CountTable
from kongtx.plugins.row_json import is_frozen
from kongtx.plugins.shared_counters import SharedCounters

__all__ = ["HEADERS_KEY", "Handler", "LIMIT_HEADER", "REMAINING_HEADER"]

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
#: ctx.shared key: the rate-limit headers this request's response gets
HEADERS_KEY = "rate-limiting.headers"

EXCEEDED = {"message": "API rate limit exceeded"}

log = logger("kongtx.plugins.rate_limiting")


def lua_int(value: float) -> str:
    """A limit as Kong printed it (``10``, not ``10.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


class Handler(CountingPlugin):
    """The rate-limiting plugin's request-time half."""

    PRIORITY = 900
    NAME = "rate-limiting"
    METRICS_TABLE = "ratelimiting_metrics"

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        #: configured periods, shortest first, with their limits
        self.limits: list[tuple[str, float]] = [
            (p, config[p]) for p in PERIODS if config.get(p) is not None
        ]
        self.periods = [p for p, _ in self.limits]
        #: the limits by place in PERIODS (LocalCounters.count_within)
        self.checks: list[tuple[int, float]] = [(PERIOD_INDEX[p], lim) for p, lim in self.limits]
        #: each limit's header names and the limit as printed, computed once
        self.header_texts: list[tuple[str, str, str]] = [
            (f"{LIMIT_HEADER}-{p}", f"{REMAINING_HEADER}-{p}", lua_int(lim))
            for p, lim in self.limits
        ]
        #: every limit a whole number (the usual): what is left printed as an int
        self.whole = all(float(lim).is_integer() for _, lim in self.limits)
        counters = self.counters
        #: the ``local`` policy's counters (synchronous), else None
        self.local: LocalCounters | None = counters if isinstance(counters, LocalCounters) else None
        #: this process's table when the local counters are one (compiled: counted in
        #: with one native call), else None (the node's shared table: its own lock)
        self.table: CountTable | None = (
            counters.table if isinstance(counters, ProcessCounters) else None
        )
        #: the slots of the node's shared table when the local counters are in it
        #: (compiled: counted in with one native call under its lock), else None
        self.slots: SlotTable | None = (
            counters.core if isinstance(counters, SharedCounters) else None
        )
        #: the local policy's per-request work (native attributes), else None
        self._window: _Window | None = (
            None
            if self.local is None
            else _Window(
                self.local,
                self.table,
                self.slots,
                self.clock.seconds,
                self.limit_by,
                self.limits,
                self.checks,
                self.header_texts,
                self.whole,
            )
        )

    def access(self, ctx: RequestContext) -> PhaseResult:
        window = self._window
        if window is None:
            api_id, identifier, starts = self.counted(ctx)
            return self._access(ctx, api_id, identifier, starts)
        window.access(ctx)
        return None

    async def _access(
        self, ctx: RequestContext, api_id: str, identifier: str, starts: Mapping[str, int]
    ) -> None:
        try:
            usage = await self.counters.usage(api_id, identifier, starts, self.periods)
        except CancelledError:
            raise
        except Exception as e:
            self.unreadable(ctx, e)
            return
        if self._decide(ctx, [usage.get(p, 0) for p in self.periods]):
            await self._increment(api_id, identifier, starts)

    async def _increment(self, api_id: str, identifier: str, starts: Mapping[str, int]) -> None:
        try:
            await self.counters.increment(api_id, identifier, starts, 1)
        except CancelledError:
            raise
        except Exception as e:
            # the request was allowed on the usage read: a lost count is logged, not fatal
            log.warn("rate-limiting: could not increment counters: {error}", error=e)

    def _decide(self, ctx: RequestContext, usage: list[int]) -> bool:
        """Set the headers; answer 429 when a period is used up.  True: let it through.

        ``usage``: the count of each configured period, in :attr:`limits` order.
        """
        return decide(ctx, usage, self.limits, self.header_texts, self.whole)

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        headers: list[tuple[str, str]] | None = ctx.shared.get(HEADERS_KEY)
        if headers:
            response = ctx.response_headers
            for name, value in headers:
                response.set(name, value)
        return None


def decide(
    ctx: RequestContext,
    usage: list[int],
    limits: list[tuple[str, float]],
    texts: list[tuple[str, str, str]],
    whole: bool,
) -> bool:
    """:meth:`Handler._decide` of a handler's limits, header texts and :attr:`whole`."""
    stop = -1
    count = len(limits)
    for i in range(count):
        if limits[i][1] - usage[i] <= 0:
            stop = i
    headers: list[tuple[str, str]] = []
    for i in range(count):
        left = limits[i][1] - usage[i]
        if stop < 0 or stop == i:
            left -= 1
        limit_name, remaining_name, limit_text = texts[i]
        headers.append((limit_name, limit_text))
        remaining = max(0, left)
        headers.append((remaining_name, str(int(remaining)) if whole else lua_int(remaining)))
    ctx.shared[HEADERS_KEY] = headers
    if stop >= 0:
        ctx.respond(429, EXCEEDED, dict(headers))
        return False
    return True


class _Window:
    """The ``local`` policy's access phase of one handler, its state in native
    attributes (a handler's own are dict entries): read and count under one lock of the
    node's table (exact even across the node's worker processes), the counters' keys
    found once a second per client."""

    def __init__(
        self,
        local: LocalCounters,
        table: CountTable | None,
        slots: SlotTable | None,
        seconds: Callable[[], float],
        limit_by: str,
        limits: list[tuple[str, float]],
        checks: list[tuple[int, float]],
        texts: list[tuple[str, str, str]],
        whole: bool,
    ) -> None:
        self.local = local
        #: this process's table when the local counters are one (compiled: counted in
        #: with one native call), else None (the node's shared table: its own lock)
        self.table = table
        #: the node's shared table's slots when the local counters are in it, else None
        self.slots = slots
        self.seconds = seconds
        self.limit_by = limit_by
        self.by_consumer = limit_by == "consumer"
        self.limits = limits
        self.checks = checks
        self.texts = texts
        self.whole = whole
        #: the second the windows below are for, and the windows (period_starts')
        self.second = -1
        self.starts: Mapping[str, int] = {}
        #: (api_id, identifier) -> the stored keys of its counters in this second's windows
        self.rows: dict[tuple[str, str], list[Any]] = {}
        #: the last request's API and consumer rows (immutable: a changed row is a new
        #: one) and their counters' keys in this second's windows, when counted by
        #: consumer: the next request of that consumer to that API needs no lookup
        self.last_api: Any = None
        self.last_consumer: Any = None
        self.last_row: list[Any] = []

    def access(self, ctx: RequestContext) -> None:
        consumer = ctx.consumer
        api = ctx.api
        now = self.seconds()
        second = int(now)
        if second != self.second:
            self.starts = period_starts(now)
            self.second = second
            self.rows.clear()
            self.last_consumer = None
        if consumer is not None and consumer is self.last_consumer and api is self.last_api:
            row = self.last_row
        else:
            row = self.row_of(ctx, api, consumer)
        table = self.table
        slots = self.slots
        if table is not None:
            usage = table.read_add(row, self.checks, 1, now)
        elif slots is not None:
            usage = slots.read_add(row, self.checks, LIFETIMES, 1, now)
        else:
            usage = self.local.read_add_stored(row, self.checks, 1, now)
        decide(ctx, usage, self.limits, self.texts, self.whole)

    def row_of(self, ctx: RequestContext, api: Any, consumer: Any) -> list[Any]:
        """The counters' keys of this request's client in this second's windows."""
        identifier = ""
        if self.by_consumer and consumer is not None:
            identifier = str(consumer.get("id") or "")
        if not identifier:
            identifier = identifier_for(self.limit_by, ctx)
        api_id = str(api["id"])
        rows = self.rows
        key = (api_id, identifier)
        row = rows.get(key)
        if row is None:
            if len(rows) >= ROW_CACHE:
                rows.clear()
            row = rows[key] = self.local.row(api_id, identifier, self.starts)
        if self.by_consumer and consumer is not None and identifier == consumer.get("id"):
            # counted by this consumer row's id: remembered for its next request
            if is_frozen(consumer) and is_frozen(api):
                self.last_api = api
                self.last_consumer = consumer
                self.last_row = row
        return row
