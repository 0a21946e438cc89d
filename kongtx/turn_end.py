# -*- test-case-name: tests.unit.test_reactor,tests.unit.test_clock -*-
"""Running the calls queued for the end of a reactor turn: one loop for both queues.

:class:`kongtx.reactor.LeanReactor` (compiled) and :class:`kongtx.clock.Clock` (pure)
each keep a list of end-of-turn calls; both run theirs with :func:`call_each`.  This
module is compiled (kongtx/build_info.py HOT_PATH), so the reactor's call to it, every
turn that has such calls, runs no interpreted frame.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger


def call_each(calls: list[Callable[[], None]], log: Logger) -> None:
    """Call each of ``calls`` in order; one that raises is logged, the others still run."""
    for fn in calls:
        try:
            fn()
        except Exception:
            log.failure("a call at the end of the reactor turn ({fn!r}) failed", fn=fn)
