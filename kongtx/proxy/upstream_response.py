"""An upstream response as the client side sees it, and who is told of it.

Part of the pooled upstream client (:mod:`kongtx.proxy.upstream`): the
:class:`kongtx.proxy.exchange.Exchange` that parses a response builds its
:class:`UpstreamResponse` (status, headers, the body delivered on demand; the push
producer the client side registers) and tells its :class:`ResponseListener` (or fires
its Deferred); the body goes to a :class:`ResponseSink`.  A pooled connection that
died before any response byte is a :class:`StaleConnection`, retried on a fresh one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import classImplements

from kongtx.proxy.headers import HeaderList

if TYPE_CHECKING:
    from kongtx.proxy.exchange import Exchange

#: Response headers never passed to the client (hop-by-hop, RFC 7230 §6.1), and the
#: framing the client side recomputes (Content-Length is re-added from ``length``).
RESPONSE_DROP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "content-length",
    }
)


class ResponseSink(Protocol):
    """Where an upstream response body goes (the pipeline's downstream side)."""

    def write(self, data: bytes) -> None:
        """One chunk of the body."""

    def finish(self) -> None:
        """The body is complete."""

    def fail(self, reason: Failure) -> None:
        """The upstream broke (or timed out) mid-body: the client must not see a clean end."""


class ResponseListener(Protocol):
    """Told of an exchange's outcome directly, instead of through a Deferred (hot path)."""

    def response(self, response: UpstreamResponse) -> None:
        """The response headers arrived (and whatever of the body came with them)."""

    def failed(self, failure: Failure) -> None:
        """No response: ``UpstreamError``, or ``StaleConnection`` (retry on a new one)."""


class StaleConnection(Exception):
    """A pooled connection died before any response byte: retry on a fresh one."""


class UpstreamResponse:
    """Status and headers of an upstream response; its body is delivered on demand.

    It is also the push producer the client side registers, so a slow client
    pauses the upstream socket instead of buffering the body in memory.
    (``IPushProducer`` is declared after the class: with a class decorator mypyc
    would compile it as a non-native class, each attribute read a dictionary lookup.)
    """

    def __init__(
        self,
        exchange: Exchange,
        status: int,
        headers: HeaderList,
        length: int | None,
        reason: str = "",
    ) -> None:
        #: None once the exchange finished (every call below is then a no-op; dropping
        #: the reference breaks the exchange <-> response cycle)
        self._exchange: Exchange | None = exchange
        self.status = status
        self.headers = headers
        #: the upstream's Content-Length (also for HEAD), ``None`` when not given
        self.length = length
        #: the upstream's reason phrase if not the status's standard one, else ""
        self.reason = reason

    def deliver(self, sink: ResponseSink) -> None:
        """Stream the body into ``sink``; the read timeout applies between chunks."""
        exchange = self._exchange
        if exchange is not None:
            exchange.attach(sink)

    def pauseProducing(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            exchange.pause()

    def resumeProducing(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            exchange.resume()

    def stopProducing(self) -> None:
        """Abandon the body (client gone): the connection is closed, never reused."""
        exchange = self._exchange
        if exchange is not None:
            exchange.abandon()


classImplements(UpstreamResponse, IPushProducer)
