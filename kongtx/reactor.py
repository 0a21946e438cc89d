# -*- test-case-name: tests.unit.test_reactor -*-
"""The node's reactor: Twisted's epoll reactor without the per-event logging context.

Twisted's ``EPollReactor.doPoll`` dispatches every socket event through
``log.callWithLogger``: a legacy log context (a dict with the selectable's
``logPrefix`` as ``system``) pushed and popped around each ``doRead``/``doWrite``, for
``twisted.python.log.msg`` calls made inside it.  Under load that bookkeeping was
about an eighth of a proxied request's CPU (docs/benchmarks.md, "Session 5").  kongtx
logs through ``twisted.logger`` (kongtx/log.py), whose events never read that context;
only Twisted's legacy ``log.msg``/``log.err`` lines would have carried the prefix as
their ``[system]`` (they now show ``[-]``).

:class:`LeanReactor` dispatches the events itself with the semantics of
``_PollLikeMixin._doReadOrWrite``: a hang-up or error with no input pending
disconnects (``ConnectionDone`` if the descriptor was reading, so a half-close
reaches ``readConnectionLost``; ``ConnectionLost`` otherwise), else a read then a
write unless the read disconnected; a ``why`` disconnects the selectable; an
exception raised by ``doRead``/``doWrite`` is logged with the selectable's
``logPrefix`` and disconnects it with that exception -- the loop goes on.

It also offers an end-of-turn hook (:meth:`LeanReactor.at_turn_end`, used through
:meth:`kongtx.clock.Clock.at_turn_end`): callables run once the events of the
current poll are dispatched, where a zero-delay ``callLater`` cost a ``DelayedCall``,
a heap push and pop each turn.  Callables queued by timed calls (or by an end-of-turn
callable) run at the end of that ``runUntilCurrent``; while any are waiting the poll
does not block, so none waits for I/O that may never come.  Nor does it block after
an end-of-turn callable called ``stop()`` (Twisted fires the shutdown in the next
``runUntilCurrent``).

How it is chosen (:func:`install_unless_chosen`): ``twistd kong`` (kongtx/tap.py) and
the worker processes install it when no reactor was installed yet; ``twistd -r kongtx``
names it (twisted/plugins/kongtx_reactor.py); an explicit ``-r <other>`` wins.
Without epoll (not Linux) Twisted's default reactor runs.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import error
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST

from kongtx.clock import call_each
from kongtx.log import logger

if sys.platform == "linux":
    from select import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT

    from twisted.internet.epollreactor import EPollReactor

    _DISCONNECTED = EPOLLHUP | EPOLLERR
    _IN = EPOLLIN
    _OUT = EPOLLOUT
else:  # pragma: no cover - no epoll: the class is never installed (install refuses)
    from twisted.internet.posixbase import PosixReactorBase as EPollReactor

log = logger("kongtx.reactor")

#: what ``_PollLikeMixin`` reports for a descriptor whose ``fileno()`` is -1
_NO_FILEDESC = error.ConnectionFdescWentAway("File descriptor lost")

#: the short name of the reactor plugin (``twistd -r kongtx``)
NAME = "kongtx"


class LeanReactor(EPollReactor):
    """``EPollReactor`` dispatching events directly, with an end-of-turn hook."""

    def __init__(self) -> None:
        super().__init__()
        self._turn_end: list[Callable[[], None]] = []

    def at_turn_end(self, fn: Callable[[], None]) -> None:
        """``fn()`` once this turn's events (or timed calls) are handled; reactor thread only."""
        self._turn_end.append(fn)

    def runUntilCurrent(self) -> None:
        super().runUntilCurrent()
        if self._turn_end:
            self._run_turn_end()

    def _run_turn_end(self) -> None:
        calls, self._turn_end = self._turn_end, []
        call_each(calls, log)

    def doPoll(self, timeout: float | None) -> None:
        """Twisted's name for :meth:`doIteration` in its poll reactors."""
        self.doIteration(timeout)

    def doIteration(self, timeout: float | None) -> None:
        """Poll for events and dispatch them (``_doReadOrWrite``'s rules, no log context).

        (A method of its own, not ``doIteration = doPoll`` as Twisted writes it: a class
        compiled by mypyc would take that line for an attribute declaration.)
        """
        if self._turn_end or self._justStopped:
            # callables are waiting, or one called stop() after runUntilCurrent looked
            # (its shutdown fires in the next one): do not sleep first
            timeout = 0
        elif timeout is None:
            timeout = -1  # wait indefinitely
        selectables = self._selectables
        try:
            # as Twisted: at most as many events as descriptors we track
            events = self._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        reads = self._reads
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            why: Any = None
            in_read = False
            if event & _DISCONNECTED and not event & _IN:
                # hung up with no input left: a clean close if we were reading (maybe a
                # half-close), an error otherwise
                if fd in reads:
                    in_read = True
                    why = CONNECTION_DONE
                else:
                    why = CONNECTION_LOST
            else:
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        if event & _IN:
                            why = selectable.doRead()
                            in_read = True
                        if not why and event & _OUT:
                            why = selectable.doWrite()
                            in_read = False
                except BaseException as e:
                    why = e
                    log.failure(
                        "{prefix}: unhandled error in doRead/doWrite, connection dropped",
                        prefix=_log_prefix(selectable),
                    )
            if why:
                self._disconnectSelectable(selectable, why, in_read)
        if self._turn_end:
            self._run_turn_end()


def _log_prefix(selectable: Any) -> str:
    """The selectable's ``logPrefix()`` (what callWithLogger put in ``system``)."""
    try:
        return str(selectable.logPrefix())
    except Exception:
        return type(selectable).__name__


def install() -> LeanReactor:
    """Install :class:`LeanReactor` as the global reactor (``twistd -r kongtx``)."""
    if sys.platform != "linux":
        raise ImportError("kongtx's reactor needs epoll (Linux)")
    from twisted.internet.main import installReactor

    reactor = LeanReactor()
    installReactor(reactor)
    return reactor


def install_unless_chosen() -> None:
    """Install :class:`LeanReactor` unless a reactor is installed already or epoll is missing.

    ``twistd -r <name>`` installs its reactor while parsing options, before
    ``makeService``: that choice stays.
    """
    if "twisted.internet.reactor" in sys.modules or sys.platform != "linux":
        return
    install()
