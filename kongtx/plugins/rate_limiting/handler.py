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

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import CancelledError

from kongtx.log import logger
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.ratelimit_counters import PERIOD_INDEX, PERIODS
from kongtx.plugins.ratelimit_local import LocalCounters
from kongtx.plugins.ratelimit_policies import CountingPlugin

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

    def access(self, ctx: RequestContext) -> PhaseResult:
        api_id, identifier, starts = self.counted(ctx)
        counters = self.counters
        if isinstance(counters, LocalCounters):
            # read and count at once: exact even across the node's worker processes
            usage = counters.count_within(api_id, identifier, starts, self.checks, 1)
            self._decide(ctx, usage)
            return None
        return self._access(ctx, api_id, identifier, starts)

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
        stop = -1
        limits = self.limits
        for i in range(len(limits)):
            if limits[i][1] - usage[i] <= 0:
                stop = i
        headers: dict[str, str] = {}
        texts = self.header_texts
        for i in range(len(limits)):
            left = limits[i][1] - usage[i]
            if stop < 0 or stop == i:
                left -= 1
            limit_name, remaining_name, limit_text = texts[i]
            headers[limit_name] = limit_text
            headers[remaining_name] = lua_int(max(0, left))
        ctx.shared[HEADERS_KEY] = headers
        if stop >= 0:
            ctx.respond(429, EXCEEDED, headers)
            return False
        return True

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        headers: dict[str, str] | None = ctx.shared.get(HEADERS_KEY)
        if headers:
            response = ctx.response_headers
            for name, value in headers.items():
                response.set(name, value)
        return None
