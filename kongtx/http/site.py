# -*- test-case-name: tests.unit.test_site -*-
"""A twisted.web Site that knows its connections and requests.

Two needs meet here: ``GET /status`` reports nginx's stub_status counters, and
``kong quit`` must stop accepting, let in-flight requests finish, then close idle
keep-alive connections.  Both need to know which connections exist and which
of them carry a request right now.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from kongtx.clock import Clock

# re-exported: kongtx.proxy.fast imports it from here
from kongtx.http.stats import connection_stats as connection_stats


class TrackingChannel(HTTPChannel):
    """An HTTPChannel that reports itself to its TrackingSite."""

    site: TrackingSite

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channel_opened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channel_closed(self)
        super().connectionLost(reason)


class RawBodyRequest(Request):
    """A Request that leaves form and multipart bodies to us.

    Twisted parses POST form submissions into ``request.args`` before our
    resource runs, and answers malformed multipart itself with a bare 400; the
    Admin API parses bodies itself (SPEC §1.1) and must answer every refusal with
    its own JSON and CORS headers.
    """

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        kw["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kw)


class TrackingSite(Site):
    """Counts connections and requests; can drain gracefully."""

    protocol = TrackingChannel  # type: ignore[assignment]
    requestFactory = RawBodyRequest

    def __init__(self, resource: Any, *args: Any, **kw: Any) -> None:
        super().__init__(resource, *args, **kw)
        self.channels: dict[TrackingChannel, int] = {}  # channel -> requests in flight
        self.accepted = 0
        self.handled = 0
        self.total_requests = 0
        self.draining = False

    # -------------------------------------------------------------- tracking

    def channel_opened(self, channel: TrackingChannel) -> None:
        self.accepted += 1
        self.handled += 1
        self.channels[channel] = 0

    def channel_closed(self, channel: TrackingChannel) -> None:
        self.channels.pop(channel, None)

    def getResourceFor(self, request: Request) -> Any:
        """Called once per request: count it until it finishes."""
        self.total_requests += 1
        channel = request.channel
        if channel in self.channels:
            self.channels[channel] += 1

            def done(_: Any) -> None:
                if channel in self.channels:
                    self.channels[channel] -= 1
                    if self.draining and self.channels[channel] == 0:
                        _close(channel)

            request.notifyFinish().addBoth(done)
        return super().getResourceFor(request)

    def stats(self) -> dict[str, int]:
        """nginx stub_status counters for ``GET /status``.

        ``writing`` counts connections with a request in flight, ``waiting`` idle
        keep-alive connections; twisted.web parses a request head in one step, so
        no connection is ever observed half-read (``reading`` is 0).
        """
        return connection_stats(self.channels, self.accepted, self.handled, self.total_requests)

    # -------------------------------------------------------------- draining

    def drain(self, clock: Clock, timeout: float) -> Deferred[None]:
        """Close idle connections now and busy ones once their request is done.

        Fires when every connection is closed or after ``timeout`` seconds (then
        the remaining ones are aborted).  Call after the listening port stopped.
        """
        self.draining = True
        for channel, busy in list(self.channels.items()):
            if not busy:
                _close(channel)
        result: Deferred[None] = Deferred()
        deadline = clock.seconds() + timeout

        def check() -> None:
            if not self.channels:
                result.callback(None)
            elif clock.seconds() >= deadline:
                for channel in list(self.channels):
                    _close(channel, abort=True)
                result.callback(None)
            else:
                clock.call_later(0.05, check)

        check()
        return result


def _close(channel: HTTPChannel, abort: bool = False) -> None:
    transport: Any = channel.transport
    if transport is not None:
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()
