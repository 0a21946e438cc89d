"""The upstream connection's lazy timer (kongtx.proxy.connection.Deadline) on a memory clock.

Re-arming it later only records the due time (the pending timer re-arms for the
rest when it fires); an earlier due time reschedules.  Either way it must fire
exactly when due, never early, never late.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from kongtx.clock import Clock
from kongtx.proxy.connection import Deadline


def _deadline() -> tuple[MemoryReactorClock, Clock, Deadline, list[str]]:
    reactor = MemoryReactorClock()
    clock = Clock(reactor)
    fired: list[str] = []
    deadline: Deadline

    def fire() -> None:
        fired.append(deadline.phase)

    deadline = Deadline(clock, fire)
    return reactor, clock, deadline, fired


def _fires_after(reactor: MemoryReactorClock, fired: list[str], seconds: float, phase: str) -> None:
    """Nothing fires until a millisecond before ``seconds`` from now; ``phase`` fires then."""
    reactor.advance(seconds - 0.001)
    assert fired == []
    reactor.advance(0.001)
    assert fired == [phase]


def test_fires_when_due() -> None:
    reactor, clock, deadline, fired = _deadline()
    deadline.start("read", 2.0)
    _fires_after(reactor, fired, 2.0, "read")
    assert deadline.fired
    assert clock.pending == 0


def test_moved_later_fires_at_the_new_time_with_one_timer() -> None:
    reactor, clock, deadline, fired = _deadline()
    deadline.start("idle", 5.0)
    reactor.advance(3.0)
    deadline.start("read", 5.0)  # due at 8 now; the timer (at 5) stays
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(2.0)  # the pending timer fires at 5: too early, re-armed for 3 more
    assert fired == [] and clock.pending == 1
    _fires_after(reactor, fired, 3.0, "read")
    assert clock.pending == 0


def test_moved_earlier_reschedules() -> None:
    reactor, clock, deadline, fired = _deadline()
    deadline.start("idle", 60.0)
    reactor.advance(1.0)
    deadline.start("read", 0.5)  # due at 1.5, before the pending 60: rescheduled
    assert len(reactor.getDelayedCalls()) == 1
    _fires_after(reactor, fired, 0.5, "read")
    assert clock.pending == 0


def test_shorter_phase_after_a_longer_one_keeps_its_own_due_time() -> None:
    """read (1 s), idle (60 s), read (1 s) again: each fires on time, no reschedule needed."""
    reactor, clock, deadline, fired = _deadline()
    deadline.start("read", 1.0)
    reactor.advance(0.5)
    deadline.start("idle", 60.0)  # later: the timer at 1.0 stays and will re-arm
    reactor.advance(0.25)
    deadline.start("read", 1.0)  # due at 1.75
    reactor.advance(0.25)  # t=1.0: the pending timer fires early, re-arms for 0.75
    assert fired == []
    reactor.advance(0.5)
    assert fired == []
    reactor.advance(0.25)
    assert fired == ["read"]


def test_touch_extends_only_an_armed_deadline() -> None:
    reactor, clock, deadline, fired = _deadline()
    deadline.touch(1.0)  # not armed: nothing
    assert clock.pending == 0
    deadline.start("read", 1.0)
    for _ in range(5):
        reactor.advance(0.9)
        deadline.touch(1.0)
    assert fired == []
    reactor.advance(1.0)
    assert fired == ["read"]


def test_cancel_and_no_timeout() -> None:
    reactor, clock, deadline, fired = _deadline()
    deadline.start("read", 1.0)
    deadline.cancel()
    assert clock.pending == 0
    reactor.advance(5)
    assert fired == []
    deadline.start("read", 1.0)
    deadline.start("send", 0)  # no timeout: the pending timer is cancelled
    assert clock.pending == 0
    reactor.advance(5)
    assert fired == [] and not deadline.fired
