# -*- test-case-name: tests.unit.test_clock -*-
"""The node's one owner of timers (STYLE.md rule 5).

Every ``callLater`` and looping call in kongtx goes through a :class:`Clock` so
that (a) unit tests drive time with ``MemoryReactorClock``/``task.Clock`` and
(b) stopping the node cancels everything it scheduled: no timer outlives its
service.  ruff's banned-api check forbids direct ``reactor.callLater`` and
``task.LoopingCall`` elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from kongtx.log import logger
from kongtx.turn_end import call_each

T = TypeVar("T")


class Clock:
    """Wraps an ``IReactorTime`` and remembers what it scheduled."""

    log = logger()

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        #: now, in seconds since the epoch, on the injected clock: the reactor's own
        #: ``seconds`` (``time.time`` on a real reactor), called without a method frame of
        #: ours in between -- the proxy reads the time several times per request
        self.seconds: Callable[[], float] = reactor.seconds
        self._delayed: set[IDelayedCall] = set()
        self._loops: set[task.LoopingCall] = set()
        #: the reactor's end-of-turn hook (kongtx.reactor.LeanReactor), or None; the
        #: proxy's end-of-turn sender (``direct_write.TurnSender``) calls it directly
        #: (no interpreted frame of ours per turn): such calls are the reactor's alone,
        #: not dropped by :meth:`cancel_all` (nor counted in :attr:`pending`)
        self.turn_end_hook: Callable[[Callable[[], None]], None] | None = getattr(
            reactor, "at_turn_end", None
        )
        self._turn_end: list[Callable[[], None]] = []

    def millis(self) -> int:
        """Now, in epoch milliseconds (Kong's ``created_at`` unit)."""
        return int(self.reactor.seconds() * 1000)

    def call_later(
        self, delay: float, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> IDelayedCall:
        """Schedule ``fn``; the call is forgotten once it ran or was cancelled."""
        # ``run`` reaches its call through a list it empties when it runs: a closure over
        # ``call`` itself would make a reference cycle (call -> run -> call) per timer,
        # left for the cycle collector; the proxy's log phase schedules one per turn.
        holder: list[IDelayedCall] = []

        def run() -> None:
            self._delayed.discard(holder.pop())
            fn(*args, **kw)

        call = self.reactor.callLater(delay, run)
        holder.append(call)
        self._delayed.add(call)
        return call

    def at_turn_end(self, fn: Callable[[], None]) -> None:
        """``fn()`` once the current reactor turn's events are handled, before the next poll.

        On kongtx's reactor (kongtx/reactor.py) this is its end-of-turn hook: no timer.
        Elsewhere (``MemoryReactorClock``, another reactor) a zero-delay call.  Calls
        queued while these run still run (at the end of that turn); :meth:`cancel_all`
        drops the waiting ones.
        """
        hook = self.turn_end_hook
        if hook is None:
            self.call_later(0, fn)
            return
        if not self._turn_end:
            hook(self._run_turn_end)
        self._turn_end.append(fn)

    def _run_turn_end(self) -> None:
        calls, self._turn_end = self._turn_end, []
        call_each(calls, self.log)

    def looping_call(
        self, interval: float, fn: Callable[[], Any], now: bool = False
    ) -> task.LoopingCall:
        """Start ``fn`` every ``interval`` seconds; failures are logged, the loop goes on."""

        async def guarded() -> None:
            try:
                result = fn()
                if isinstance(result, Deferred) or hasattr(result, "__await__"):
                    await result
            except Exception:
                self.log.failure("periodic job {fn!r} failed", fn=fn)

        loop = task.LoopingCall(lambda: Deferred.fromCoroutine(guarded()))
        loop.clock = self.reactor
        self._loops.add(loop)
        loop.start(interval, now=now)
        return loop

    def sleep(self, seconds: float) -> Deferred[None]:
        """A Deferred that fires after ``seconds`` (cancellable)."""
        d: Deferred[None] = Deferred(lambda _: call.cancel() if call.active() else None)
        call = self.call_later(seconds, d.callback, None)
        return d

    def cancel_all(self) -> None:
        """Cancel every pending call and stop every loop (the node is stopping)."""
        for call in list(self._delayed):
            if call.active():
                call.cancel()
        self._delayed.clear()
        self._turn_end.clear()
        for loop in list(self._loops):
            if loop.running:
                loop.stop()
        self._loops.clear()

    @property
    def pending(self) -> int:
        """How many calls and loops are still scheduled (tests assert it is 0)."""
        return (
            sum(1 for c in self._delayed if c.active())
            + sum(1 for lp in self._loops if lp.running)
            + len(self._turn_end)
        )


def wall_clock_millis() -> int:
    """Epoch ms from the OS clock, for places that have no reactor (the CLI)."""
    return int(time.time() * 1000)
