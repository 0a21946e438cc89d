"""One pooled upstream connection and its one timer (send, read or idle timeout).

Part of the pooled upstream client (:mod:`kongtx.proxy.upstream`): a connection
carries one :class:`kongtx.proxy.exchange.Exchange` at a time, then waits in the
client's keep-alive pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import error as ierror
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.proxy.upstream_parsing import ResponseReader

if TYPE_CHECKING:
    from kongtx.proxy.exchange import Exchange
    from kongtx.proxy.upstream import UpstreamClient

#: ``(scheme, host to connect to, port, name for TLS)``; the name is set only for a
#: balanced peer, whose host is then an IP (``""``: connect to the URL's host).
PoolKey = tuple[str, str, int, str]


class Deadline:
    """One resettable timeout on the node clock (send, read or idle, nginx style).

    Lazy: re-arming it to a later time (every request moves it 2-3 times) only
    records the new due time; the pending timer fires at the older time and is
    re-armed for what is left (as the front-end's idle timer does).  Only a due
    time earlier than the pending timer's reschedules it.  (``DelayedCall.reset``
    per phase cost interpreted Twisted code and a clock read each.)
    """

    __slots__ = ("_call", "_call_at", "_clock", "_due", "_fire", "_now", "fired", "phase")

    def __init__(self, clock: Clock, fire: Callable[[], None]) -> None:
        self._clock = clock
        #: the reactor's own clock (``Clock.seconds`` without the extra call)
        self._now: Callable[[], float] = clock.reactor.seconds
        self._fire = fire
        #: the pending timer, and when it fires (node clock)
        self._call: IDelayedCall | None = None
        self._call_at = 0.0
        #: when the deadline is (meaningful while ``_call`` is set)
        self._due = 0.0
        self.fired = False
        self.phase = ""

    def start(self, phase: str, seconds: float) -> None:
        """Time out ``seconds`` from now (0 or less: no timeout) in ``phase``."""
        self.phase = phase
        self.fired = False
        if seconds > 0:
            self._arm(seconds)
        else:
            self.cancel()

    def touch(self, seconds: float) -> None:
        """Time out ``seconds`` from now, if armed (progress was made)."""
        if self._call is not None:
            self._arm(seconds)

    def _arm(self, seconds: float) -> None:
        due = self._now() + seconds
        self._due = due
        call = self._call
        if call is not None:
            if self._call_at <= due:
                return  # the pending timer comes first and re-arms for the rest
            self._call = None
            if call.active():
                call.cancel()  # due earlier than the pending timer: rescheduled
        self._call_at = due
        self._call = self._clock.call_later(seconds, self._expired)

    def cancel(self) -> None:
        call = self._call
        self._call = None
        if call is not None and call.active():
            call.cancel()

    def _expired(self) -> None:
        self._call = None
        due = self._due
        now = self._now()
        if now < due:
            # moved later since the timer was set: wait for the rest
            self._call_at = due
            self._call = self._clock.call_later(due - now, self._expired)
            return
        self.fired = True
        self._fire()


class UpstreamConnection(TxProtocol):
    """One upstream connection: carries one exchange at a time, then waits in the pool."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.exchange: Exchange | None = None
        self.reused = False
        self.timer: Deadline | None = None
        self.client: UpstreamClient | None = None
        #: reads the responses, its parser kept from one to the next (made by the first exchange)
        self.reader: ResponseReader | None = None
        #: the idle list of its pool (set when first released into it)
        self.idle: list[UpstreamConnection] | None = None
        #: closed or closing (by us: close, abort; or lost): never pooled or taken again
        #: (a native flag: the transport's ``connected``/``disconnecting`` are two
        #: generic attribute lookups on each take and release)
        self.closing = False

    def timer_for(self, clock: Clock) -> Deadline:
        """This connection's one timer, kept for its life: re-arming it is a cheap reset.

        (A timer per request plus one per pool stay cost two ``callLater`` and two
        cancellations per proxied request.)
        """
        timer = self.timer
        if timer is None:
            timer = self.timer = Deadline(clock, self._timer_fired)
        return timer

    def _timer_fired(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange._timed_out()
        else:
            self.close()  # idle in the pool for too long (connectionLost forgets it)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        set_nodelay = getattr(transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream is confused; never reuse it.
            self.abort()
            return
        exchange.data_received(data)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        if self.client is not None:
            self.client._forget(self)
        self.closing = True
        exchange, self.exchange = self.exchange, None
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.parser = None  # breaks the reader <-> parser (bound callbacks) cycle
        if exchange is not None:
            exchange.connection_lost(reason)

    def close(self) -> None:
        self.closing = True
        self.exchange = None
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.closing = True
        transport: Any = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()


class UpstreamConnectionFactory(Factory):
    noisy = False

    def __init__(self, key: PoolKey, client: UpstreamClient) -> None:
        self.key = key
        self.client = client

    def buildProtocol(self, addr: object) -> UpstreamConnection:
        conn = UpstreamConnection(self.key)
        conn.client = self.client
        conn.factory = self
        return conn


def usable(transport: Any) -> bool:
    return (
        transport is not None
        and getattr(transport, "connected", True)
        and not getattr(transport, "disconnecting", False)
    )
