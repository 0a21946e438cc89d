# -*- test-case-name: tests.unit.test_direct_write -*-
"""Write to a plain TCP transport at once instead of on the next reactor turn.

Twisted's ``transport.write`` never writes: it appends to the transport's buffer,
registers the socket for writability (``epoll_ctl``), and on the next reactor
iteration ``doWrite`` sends the buffer and unregisters it (``epoll_ctl`` again).
A proxied request writes twice (the request head upstream, the response to the
client), so that is four extra system calls, two extra passes through the
reactor loop and the Python bookkeeping of both (``addWriter``/``removeWriter``,
``doWrite``, ``_concatenate``) per request, measured at four ``epoll_ctl`` per
request under wrk (docs/benchmarks.md, "Session 2").

:func:`write_now` sends with one ``send`` when that is safe -- the transport is a
plain (non-TLS) ``twisted.internet.tcp`` connection, still connected, not closing,
not half-closed, with nothing already buffered (so bytes never overtake earlier
ones) and no pull producer waiting for the buffer to drain -- and hands whatever the kernel did not take (a full socket buffer, an
error) to ``transport.write``, which buffers it and goes on exactly as before:
backpressure (a registered producer is paused past the buffer size), the
connection-lost path on ``EPIPE``/``ECONNRESET``, ``loseConnection`` after the
buffer drained.  Any other transport (TLS, a test's ``StringTransport``, another
reactor's) always takes the normal path.

Two writes of one response (a chunk, then the last-chunk marker) are now two
``send`` calls rather than one buffer flushed together, so the front-end sets
``TCP_NODELAY`` on client connections (as nginx's ``tcp_nodelay on``, its
default): Nagle's algorithm would hold the second small segment until the
client's delayed ACK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from twisted.internet import tcp

from kongtx.log import logger

if TYPE_CHECKING:
    from kongtx.clock import Clock

log = logger("kongtx.proxy")

#: Transport classes whose socket may be written directly (exact types: a subclass may
#: override ``write``).
_SERVER: Final = tcp.Server
_CLIENT: Final = tcp.Client


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending at once when nothing is buffered on plain TCP.

    "Nothing buffered" is ``dataBuffer`` empty and ``_tempDataLen`` 0: Twisted's
    ``doWrite`` resets ``dataBuffer`` to ``b""`` (and ``offset`` to 0) whenever it sent
    all of it with nothing waiting, so with nothing waiting ``offset == len(dataBuffer)``
    only for an empty buffer.  (The transport is read through its generic attributes:
    the cheapest tests first, each read costing a dictionary lookup.)
    """
    kind = type(transport)
    if (
        (kind is _SERVER or kind is _CLIENT)
        and data
        and transport.connected
        and not transport._tempDataLen
        and not transport.dataBuffer
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.TLS
        and (transport.producer is None or transport.streamingProducer)
    ):
        try:
            sent = transport.socket.send(data)  # EINTR is retried by Python (PEP 475)
        except OSError:
            # EAGAIN (a full socket buffer) or a real error: the normal path buffers
            # the bytes, and doWrite meets the same error and loses the connection.
            sent = 0
        if sent >= len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


class TurnSender:
    """Sends made together at the end of the reactor turn that asked for them.

    On loopback (and on any host whose upstream is idle between requests) most of the
    kernel time of a ``send`` is waking the receiver: an upstream that sleeps in
    ``epoll_wait`` between requests is woken once per request, an inter-processor
    interrupt on a virtual machine.  The requests read in one reactor turn (several
    under load) have their upstream heads queued here and sent one after the other
    once the turn's events are handled (:meth:`Clock.at_turn_end`: on kongtx's reactor
    right after the poll's events are dispatched, elsewhere a zero-delay timer; either
    way before the reactor polls again), so the upstream wakes once for all of them.  A lone request waits
    for nothing: the turn ends as soon as its handler returns.

    Only heads of requests without a body go through here (nothing else is written
    to that connection until its response arrives, so nothing can overtake them);
    a transport that is not plain TCP is written at once, as before.

    The fast front-end's client connections queue their responses themselves (every
    write of a connection goes through its own queue, so that a close or an abort
    never overtakes them) and ask to be flushed at the end of the turn
    (:meth:`flush_later`): the client (wrk, a keep-alive client) is woken once per
    turn too.  The pipeline's log phase runs after them (:meth:`after_sends`).  One
    sender per clock (:func:`turn_sender`): one end-of-turn call for all of these.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._queue: list[tuple[Any, bytes]] = []
        self._targets: list[Flushable] = []
        self._calls: list[Callable[[], None]] = []
        self._armed = False
        #: the reactor's end-of-turn hook when it has one (kongtx's reactor): called
        #: directly, not through the (interpreted) clock's queue
        self._hook = clock.turn_end_hook

    def send(self, transport: Any, data: bytes) -> None:
        """``write_now(transport, data)`` at the end of this reactor turn."""
        kind = type(transport)
        if kind is not _SERVER and kind is not _CLIENT:
            write_now(transport, data)
            return
        if not self._armed:
            self._arm()
        self._queue.append((transport, data))

    def flush_later(self, target: Flushable) -> None:
        """``target.flush()`` at the end of this reactor turn."""
        if not self._armed:
            self._arm()
        self._targets.append(target)

    def after_sends(self, call: Callable[[], None]) -> None:
        """``call()`` at the end of this reactor turn, once the turn's bytes are sent."""
        if not self._armed:
            self._arm()
        self._calls.append(call)

    def _arm(self) -> None:
        self._armed = True
        hook = self._hook
        if hook is not None:
            hook(self._flush)
        else:
            self._clock.at_turn_end(self._flush)

    def _flush(self) -> None:
        self._armed = False
        # (a list is replaced only when something was queued in it: no allocation for
        # the empty ones)
        queue = self._queue
        if queue:
            self._queue = []
            for transport, data in queue:
                write_now(transport, data)  # a connection lost meanwhile drops its bytes
        targets = self._targets
        if targets:
            self._targets = []
            for target in targets:
                try:
                    target.flush()
                except Exception:
                    log.failure("flushing a connection failed")
        calls = self._calls
        if calls:
            self._calls = []
            for call in calls:
                try:
                    call()
                except Exception:
                    log.failure("a call at the end of the turn failed")


class Flushable(Protocol):
    """What :meth:`TurnSender.flush_later` flushes (a front-end connection)."""

    def flush(self) -> None:
        """Send what was queued."""


#: the attribute of a Clock holding its sender: one per clock, living as long as the
#: clock (a WeakValueDictionary could not hold a compiled TurnSender: mypyc's native
#: classes take no weak reference)
_SENDER_ATTR = "_kongtx_turn_sender"


def turn_sender(clock: Clock) -> TurnSender:
    """The :class:`TurnSender` of ``clock``, shared by whoever asks (one call per turn)."""
    sender = getattr(clock, _SENDER_ATTR, None)
    if not isinstance(sender, TurnSender):
        sender = TurnSender(clock)
        setattr(clock, _SENDER_ATTR, sender)
    return sender


def batchable(transport: Any) -> bool:
    """Whether ``transport`` is plain TCP, whose writes may wait for the end of the turn."""
    kind = type(transport)
    return kind is _SERVER or kind is _CLIENT
