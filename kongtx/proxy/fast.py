# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""The fast proxy front-end: an HTTP/1.1 server protocol on httptools (llhttp).

twisted.web parses request lines and headers in Python, builds a ``Request``
with ``Headers`` that sanitise every name and value, and writes the response
through several layers; for a proxy that is most of the CPU per request
(docs/benchmarks.md).  This protocol lets llhttp (C) parse, hands the pipeline
(:class:`kongtx.proxy.pipeline.ProxyPipeline`) an :class:`IncomingRequest` and
is itself the pipeline's :class:`Downstream`, writing each response head in one
piece.  The pipeline, the plugins and the upstream client are the same as
behind ``ProxyResource`` (``proxy_frontend = web``).

Strictness is the same as :mod:`kongtx.proxy.http` (request smuggling); what is
refused and how is :mod:`kongtx.proxy.fast_parsing`'s business.

Requests are served one at a time per connection, in order; pipelined requests
are parsed ahead and queued (the client is no longer read while too many wait).
Bodies up to ``stream_threshold`` are read whole before the pipeline runs
(replayable on a stale pooled upstream connection); larger and chunked ones
start the pipeline as soon as the head is in and stream through a
:class:`kongtx.proxy.http.BodyPipe`.  A response finished before its request
body was read whole closes the connection, so the rest of that body is never
parsed as a request.  An ``Upgrade`` request the pipeline tunnels (WebSocket)
hands the raw connection over; one it does not leaves HTTP going on.

:class:`FastProxyFactory` counts connections and requests like
``kongtx.http.site.TrackingSite`` (``stats()`` for ``GET /status``,
``drain()`` for ``kong quit``); each connection is a
:class:`kongtx.proxy.fast_connection.FastProxyProtocol`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from kongtx.clock import Clock
from kongtx.http.stats import connection_stats
from kongtx.proxy.direct_write import turn_sender
from kongtx.proxy.fast_connection import FastProxyProtocol
from kongtx.proxy.pipeline import ProxyPipeline


class FastProxyFactory(Factory):
    """Builds :class:`FastProxyProtocol`; counts like ``TrackingSite`` and drains."""

    noisy = False

    def __init__(
        self,
        pipeline: ProxyPipeline,
        max_header_size: int = 8192,
        stream_threshold: int = 1024 * 1024,
        clock: Clock | None = None,
        idle_timeout: float = 75.0,
    ) -> None:
        self.pipeline = pipeline
        self.max_header_size = max_header_size
        self.stream_threshold = stream_threshold
        #: with a clock, a connection idle or sending a head for ``idle_timeout``
        #: seconds is closed (nginx's keepalive_timeout / client_header_timeout)
        self.clock = clock
        self.idle_timeout = idle_timeout
        #: with a clock, responses to plain TCP clients leave at the end of the reactor
        #: turn, together (``kongtx.proxy.direct_write.TurnSender``)
        self.turn = turn_sender(clock) if clock is not None else None
        #: the open connections; each counts its requests and knows whether one is in
        #: flight, so that a request costs the factory nothing (``channels``, ``stats``)
        self._connections: set[FastProxyProtocol] = set()
        #: requests served on connections closed since
        self._closed_requests = 0
        self.accepted = 0
        self.handled = 0
        self.draining = False

    def buildProtocol(self, addr: Any) -> FastProxyProtocol:
        proto = FastProxyProtocol()
        proto.factory = self
        proto.owner = self
        return proto

    # ------------------------------------------------------------ tracking

    def connection_opened(self, proto: FastProxyProtocol) -> int:
        self.accepted += 1
        self.handled += 1
        self._connections.add(proto)
        return self.accepted

    def connection_closed(self, proto: FastProxyProtocol) -> None:
        if proto in self._connections:
            self._connections.remove(proto)
            self._closed_requests += proto.requests_served

    @property
    def channels(self) -> dict[FastProxyProtocol, int]:
        """Open connection -> requests in flight (0 or 1: one at a time per connection)."""
        return {proto: 0 if proto.idle else 1 for proto in self._connections}

    @property
    def total_requests(self) -> int:
        """Requests started since the listener opened."""
        return self._closed_requests + sum(p.requests_served for p in self._connections)

    def stats(self) -> dict[str, int]:
        """nginx stub_status counters, as ``TrackingSite.stats()``."""
        return connection_stats(self.channels, self.accepted, self.handled, self.total_requests)

    def drain(self, clock: Clock, timeout: float, idle_grace: float = 1.0) -> Deferred[None]:
        """Let every connection finish, then fire (call after the listening port stopped).

        A connection answers its next request with ``Connection: close`` and closes;
        one that stays idle for ``idle_grace`` seconds is closed then.  Closing idle
        keep-alive connections at once would race clients that are sending a
        request on them at that moment (the request would fail: a reload must not
        fail requests).  After ``timeout`` seconds the rest are aborted.
        """
        self.draining = True
        for proto in self._connections:
            proto.draining = True  # its next response closes it
        result: Deferred[None] = Deferred()
        now = clock.seconds()
        deadline = now + timeout
        idle_since: dict[FastProxyProtocol, float] = {}

        def check() -> None:
            now = clock.seconds()
            for proto, busy in list(self.channels.items()):
                if busy:
                    idle_since.pop(proto, None)
                elif now - idle_since.setdefault(proto, now) >= idle_grace:
                    proto.close_if_idle()
            if not self.channels:
                result.callback(None)
            elif now >= deadline:
                for proto in list(self.channels):
                    transport: Any = proto.transport
                    if transport is not None:
                        transport.abortConnection()
                result.callback(None)
            else:
                clock.call_later(0.05, check)

        check()
        return result
