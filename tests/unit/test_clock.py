"""kongtx.clock.Clock.at_turn_end without kongtx's reactor: a zero-delay call.

(On kongtx's reactor, the same method uses its end-of-turn hook: tests/unit/test_reactor.py.)
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from kongtx.clock import Clock


def test_at_turn_end_falls_back_to_a_zero_delay_call() -> None:
    reactor = MemoryReactorClock()
    clock = Clock(reactor)
    seen: list[str] = []
    clock.at_turn_end(lambda: seen.append("a"))
    clock.at_turn_end(lambda: clock.at_turn_end(lambda: seen.append("c")))
    clock.at_turn_end(lambda: seen.append("b"))
    assert [c.getTime() for c in reactor.getDelayedCalls()] == [0, 0, 0]
    assert clock.pending == 3
    reactor.advance(0)  # (task.Clock runs what becomes due meanwhile in the same advance)
    assert seen == ["a", "b", "c"]
    assert clock.pending == 0


def test_cancel_all_drops_the_fallback_calls() -> None:
    reactor = MemoryReactorClock()
    clock = Clock(reactor)
    seen: list[str] = []
    clock.at_turn_end(lambda: seen.append("dropped"))
    clock.cancel_all()
    reactor.advance(0)
    assert seen == []
    assert clock.pending == 0
