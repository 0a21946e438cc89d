"""The log phase of finished requests, run after their responses are out.

DESIGN.md §3 step 5: :meth:`kongtx.proxy.pipeline.ProxyPipeline.end_request` queues
each routed request that has a plugin chain and a status; the queue runs on a later
reactor turn, after the turn's responses were sent (one timer per turn, shared with
``direct_write.TurnSender``), so the log phase never delays a client.  A failing
plugin is logged, never raised.
"""

from __future__ import annotations

import inspect

from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.context import PluginChain, ProxyContext
from kongtx.proxy.direct_write import turn_sender

log = logger("kongtx.proxy")


class LogQueue:
    """The requests whose log phase runs at the end of this reactor turn."""

    def __init__(self, clock: Clock) -> None:
        self._queue: list[tuple[PluginChain, ProxyContext]] = []
        self._turn = turn_sender(clock)

    def add(self, chain: PluginChain, ctx: ProxyContext) -> None:
        """Run the log phase on a later reactor turn, never before the response is out.

        One timer serves every request that finished in the same turn.
        """
        self._queue.append((chain, ctx))
        if len(self._queue) == 1:
            # after the turn's responses are sent (their timer: one for both)
            self._turn.after_sends(self._run)

    def _run(self) -> None:
        queue, self._queue = self._queue, []
        for chain, ctx in queue:
            self._run_one(chain, ctx)

    def _run_one(self, chain: PluginChain, ctx: ProxyContext) -> None:
        try:
            pending = chain.log(ctx)
        except Exception:
            log.failure("log phase failed for {uri}", uri=ctx.request_uri)
            return
        if pending is not None and inspect.isawaitable(pending):

            async def run() -> None:
                try:
                    await pending
                except Exception:
                    log.failure("log phase failed for {uri}", uri=ctx.request_uri)

            Deferred.fromCoroutine(run())
