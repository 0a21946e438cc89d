# -*- test-case-name: tests.unit.test_plugin_response_ratelimiting -*-
"""response-ratelimiting: quotas that the upstream spends, per named limit (SPEC §4.4).

* access: read the usage of every name and period; with
  ``block_on_first_violation`` a used-up limit answers 429 at once; the upstream
  gets ``X-RateLimit-Remaining-<name>`` (the smallest remaining over the name's
  periods) so it can decide what to do;
* header_filter: the upstream's ``<header_name>: name1=n, name2=m`` says what this
  response cost; the client gets ``X-RateLimit-Limit-<name>-<period>`` and
  ``X-RateLimit-Remaining-<name>-<period>``, never the upstream's header; a cost
  > 0 on a limit already used up turns the response into a bodyless 429 and is
  not counted;
* log: the costs are added to the counters (unknown names are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred

from kongtx.log import logger
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.rate_limiting.handler import LIMIT_HEADER, REMAINING_HEADER, lua_int
from kongtx.plugins.ratelimit_counters import PERIODS
from kongtx.plugins.ratelimit_local import LocalCounters
from kongtx.plugins.ratelimit_policies import CountingPlugin

__all__ = ["Handler", "STATE_KEY", "parse_costs"]

#: ctx.shared key: (identifier, starts, usage, costs or None, stopped)
STATE_KEY = "response-ratelimiting.state"

log = logger("kongtx.plugins.response_ratelimiting")


def parse_costs(values: list[str]) -> dict[str, int]:
    """``name1=n, name2=m`` (possibly several header lines) to ``{name: n}``.

    Pieces that are not ``name=<number>`` are skipped, as Kong's parser did.
    """
    costs: dict[str, int] = {}
    for value in values:
        for piece in value.split(","):
            name, eq, number = piece.partition("=")
            name, number = name.strip(), number.strip()
            if not eq or not name:
                continue
            try:
                costs[name] = int(float(number))
            except ValueError:
                continue
    return costs


class _State:
    __slots__ = ("costs", "identifier", "starts", "stopped", "usage")

    def __init__(
        self, identifier: str, starts: Mapping[str, int], usage: dict[str, dict[str, int]]
    ):
        self.identifier = identifier
        self.starts = starts
        #: name -> period -> remaining (limit - usage)
        self.usage = usage
        self.costs: dict[str, int] = {}
        self.stopped = False


class Handler(CountingPlugin):
    """The response-ratelimiting plugin's request-time half."""

    PRIORITY = 900
    NAME = "response-ratelimiting"
    METRICS_TABLE = "response_ratelimiting_metrics"

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        #: name -> [(period, limit)] in period order
        self.limits: dict[str, list[tuple[str, float]]] = {}
        for name in sorted(config.get("limits") or {}):
            periods = config["limits"][name] or {}
            self.limits[name] = [(p, periods[p]) for p in PERIODS if periods.get(p) is not None]
        self.header_name = str(config.get("header_name") or "x-kong-limit")
        self.block = bool(config.get("block_on_first_violation"))

    # ------------------------------------------------------------------ access

    def access(self, ctx: RequestContext) -> PhaseResult:
        api_id, identifier, starts = self.counted(ctx)
        counters = self.counters
        if isinstance(counters, LocalCounters):
            used = {
                name: counters.usage_now(api_id, identifier, starts, [p for p, _ in lims], name)
                for name, lims in self.limits.items()
            }
            self._decide(ctx, identifier, starts, used)
            return None
        return self._access(ctx, api_id, identifier, starts)

    async def _access(
        self, ctx: RequestContext, api_id: str, identifier: str, starts: Mapping[str, int]
    ) -> None:
        used: dict[str, dict[str, int]] = {}
        try:
            for name, lims in self.limits.items():
                used[name] = await self.counters.usage(
                    api_id, identifier, starts, [p for p, _ in lims], name
                )
        except CancelledError:
            raise
        except Exception as e:
            self.unreadable(ctx, e)
            return
        self._decide(ctx, identifier, starts, used)

    def _decide(
        self,
        ctx: RequestContext,
        identifier: str,
        starts: Mapping[str, int],
        used: Mapping[str, Mapping[str, int]],
    ) -> None:
        remaining: dict[str, dict[str, int]] = {}
        for name, lims in self.limits.items():
            per = remaining[name] = {}
            for period, limit in lims:
                per[period] = int(limit - used[name].get(period, 0))
        for name, per in remaining.items():
            if not per:
                continue
            if self.block and any(r <= 0 for r in per.values()):
                ctx.respond(429, {"message": f"API rate limit exceeded for '{name}'"})
                return
            ctx.headers.set(f"{REMAINING_HEADER}-{name}", str(min(per.values())))
        ctx.shared[STATE_KEY] = _State(identifier, starts, remaining)

    # ------------------------------------------------------------ header_filter

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        state: _State | None = ctx.shared.get(STATE_KEY)
        if state is None:
            return None
        response = ctx.response_headers
        costs = parse_costs(response.get_all(self.header_name))
        response.remove(self.header_name)
        stop = False
        for name, lims in self.limits.items():
            cost = costs.get(name, 0)
            for period, limit in lims:
                left = state.usage[name][period]
                response.set(f"{LIMIT_HEADER}-{name}-{period}", lua_int(limit))
                response.set(f"{REMAINING_HEADER}-{name}-{period}", str(max(0, left - cost)))
                if cost > 0 and left <= 0:
                    stop = True
        if stop:
            state.stopped = True
            ctx.status = 429
            response.set("Content-Length", "0")
            response.remove("Transfer-Encoding")
            return None
        state.costs = {n: c for n, c in costs.items() if n in self.limits and c != 0}
        return None

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        state: _State | None = ctx.shared.get(STATE_KEY)
        if state is not None and state.stopped:
            return b""
        return chunk

    # ---------------------------------------------------------------------- log

    def log(self, ctx: RequestContext) -> PhaseResult:
        state: _State | None = ctx.shared.get(STATE_KEY)
        if state is None or state.stopped or not state.costs:
            return None
        api_id = str(ctx.api["id"])
        counters = self.counters
        if isinstance(counters, LocalCounters):
            for name, cost in state.costs.items():
                counters.increment_now(api_id, state.identifier, state.starts, cost, name)
            return None
        return Deferred.fromCoroutine(self._increment(api_id, state))

    async def _increment(self, api_id: str, state: _State) -> None:
        for name, cost in state.costs.items():
            try:
                await self.counters.increment(api_id, state.identifier, state.starts, cost, name)
            except CancelledError:
                raise
            except Exception as e:
                log.warn(
                    "response-ratelimiting: could not increment {name}: {error}", name=name, error=e
                )
