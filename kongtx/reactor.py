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

A read on a connected plain TCP socket (``tcp.Server``/``tcp.Client``, the event
``EPOLLIN`` alone) is done here (:func:`_read_tcp`, ``tcp.Connection.doRead``'s rules)
and handed straight to the protocol, unwrapping an endpoint's ``_WrappingProtocol``:
no interpreted Twisted frame (``doRead``, ``_dataReceived``, the wrapper's
``dataReceived``) between the poll and kongtx's compiled ``dataReceived``.

How it is chosen (:func:`install_unless_chosen`): ``twistd kong`` (kongtx/tap.py) and
the worker processes install it when no reactor was installed yet; ``twistd -r kongtx``
names it (twisted/plugins/kongtx_reactor.py); an explicit ``-r <other>`` wins.
Without epoll (not Linux) Twisted's default reactor runs.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from errno import EWOULDBLOCK
from typing import Any, Final

from twisted.internet import error, tcp
from twisted.internet.endpoints import _WrappingProtocol
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST

from kongtx.log import logger
from kongtx.turn_end import call_each

if sys.platform == "linux":
    from twisted.internet.epollreactor import EPollReactor
else:  # pragma: no cover - no epoll: the class is never installed (install refuses)
    from twisted.internet.posixbase import PosixReactorBase as EPollReactor

log = logger("kongtx.reactor")

#: epoll's event bits (Linux's values of ``select.EPOLLIN`` ... as constants the compiled
#: dispatch tests natively; tests/unit/test_reactor.py checks them)
_IN: Final = 0x001
_OUT: Final = 0x004
_DISCONNECTED: Final = 0x008 | 0x010  # EPOLLERR | EPOLLHUP

#: what ``_PollLikeMixin`` reports for a descriptor whose ``fileno()`` is -1
_NO_FILEDESC = error.ConnectionFdescWentAway("File descriptor lost")

#: the transports whose reads :func:`_read_tcp` does (exact types: a subclass may
#: override ``doRead``)
_SERVER: Final = tcp.Server
_CLIENT: Final = tcp.Client

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

    def mainLoop(self) -> None:
        """Twisted's loop, compiled: its ``with _topHandler`` (a context manager of
        Twisted's logger) cost two interpreted calls per turn.  As there, an exception
        escaping a turn is logged and the loop goes on."""
        while self._started:
            try:
                self.runUntilCurrent()
                timeout = self.timeout()
                self.doIteration(timeout if self.running else 0.0)
            except BaseException:
                log.failure("Unexpected error in main loop.")
        log.info("Main loop terminated.")

    def runUntilCurrent(self) -> None:
        """Twisted's, skipped when it has nothing to do (most turns under load): no
        call from a thread, no timed call new or due, no stop pending.

        (Twisted's is interpreted: two frames and a clock read per turn.)  Its sweep of
        cancelled calls waits for the next turn that has a call new or due, as they
        are what adds cancelled calls to the heap.
        """
        pending: list[Any] = self._pendingTimedCalls
        if (
            self.threadCallQueue
            or self._newTimedCalls
            or self._justStopped
            or (pending and pending[0].time <= self.seconds())
        ):
            super().runUntilCurrent()
        if self._turn_end:
            self._run_turn_end()

    def timeout(self) -> float | None:
        """Twisted's (how long the poll may sleep), compiled: no new timed call to insert
        is the common case."""
        if self._newTimedCalls:
            return super().timeout()
        pending: list[Any] = self._pendingTimedCalls
        if not pending:
            return None
        delay: float = pending[0].time - self.seconds()
        # epoll_wait's limit (milliseconds in a C int), as Twisted's
        return max(0.0, min(2147483.0, delay))

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
        # (typed: the compiled loop tests the event bits natively and looks the
        # descriptor up in the dict directly)
        selectables: dict[Any, Any] = self._selectables
        try:
            # as Twisted: at most as many events as descriptors we track
            events: list[tuple[Any, int]] = self._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        reads: set[Any] = self._reads
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
                    kind = type(selectable)
                    if (
                        event == _IN
                        and (kind is _SERVER or kind is _CLIENT)
                        and selectable.connected
                    ):
                        # the common case, a read on a connected plain TCP socket: its doRead
                        # here (_read_tcp), without Twisted's interpreted frames
                        why = _read_tcp(selectable)
                        in_read = True
                    elif selectable.fileno() == -1:
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


def _read_tcp(connection: Any) -> Any:
    """``tcp.Connection.doRead`` (Twisted's rules), for a connected ``tcp.Server``/``tcp.Client``.

    Up to ``bufferSize`` bytes from the socket: none ready (``EWOULDBLOCK``) is nothing,
    end of file is ``CONNECTION_DONE``, another error ``CONNECTION_LOST`` (as the
    dispatch's ``fileno() == -1`` check, a socket closed behind Twisted's back is
    ``ConnectionFdescWentAway``); data goes to the protocol's ``dataReceived``, whose
    result Twisted ignores.  An endpoint's ``_WrappingProtocol`` (upstream connections)
    only forwards ``dataReceived`` to the protocol it wraps: that protocol is called
    directly.  ``connected`` is checked first: a connecting ``tcp.Client`` reads with its
    ``doConnect``, and a connection lost earlier in the poll has no socket.
    """
    try:
        data = connection.socket.recv(connection.bufferSize)
    except OSError as e:
        if e.errno == EWOULDBLOCK:
            return None
        if connection.fileno() == -1:
            return _NO_FILEDESC
        return CONNECTION_LOST
    if not data:
        return CONNECTION_DONE
    protocol = connection.protocol
    if type(protocol) is _WrappingProtocol:
        protocol = protocol._wrappedProtocol
    protocol.dataReceived(data)
    return None


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
