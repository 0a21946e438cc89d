# -*- test-case-name: tests.unit.test_pipeline -*-
"""``ProxyResource``: the twisted.web front-end of the proxy pipeline.

Everything about proxying lives in :mod:`kongtx.proxy.pipeline`; this module only
translates a ``twisted.web`` request into an :class:`IncomingRequest` and offers
the request as a :class:`Downstream`.  It sits on the shared async Resource base
(``kongtx.http.resource``), which cancels the pipeline when the client leaves
(and so the upstream request) and turns any unexpected exception into a 500
error page.

Request bodies up to the site's ``stream_threshold`` are read whole before
``render`` (replayable on a stale pooled connection); larger and chunked ones reach
the pipeline as a :class:`kongtx.proxy.http.BodyPipe` while they still arrive, and
stream upstream with backpressure (``kongtx.proxy.http.ProxyRequest``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.http_headers import Headers

from kongtx.http.resource import AsyncResource, HTTPRequest
from kongtx.proxy.context import IncomingRequest
from kongtx.proxy.errors import error_page
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.pipeline import ProxyPipeline
from kongtx.proxy.tunnel import Tunnel


class WebDownstream:
    """A ``twisted.web`` request as the pipeline's :class:`Downstream`."""

    __slots__ = ("_producer", "request")

    def __init__(self, request: HTTPRequest) -> None:
        self.request = request
        self._producer: IPushProducer | None = None

    @property
    def gone(self) -> bool:
        return bool(self.request.finished) or bool(getattr(self.request, "_disconnected", False))

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        request: Any = self.request
        request.setResponseCode(status)
        fresh = Headers()
        for name, value in headers:
            fresh.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        # Drop twisted.web's own Server/Date/Content-Type defaults: the upstream's win.
        request.responseHeaders = fresh
        request.defaultContentType = None

    def send_head_lowered(
        self, status: int, items: list[tuple[str, str, str]], reason: str
    ) -> None:
        self.send_head(status, [(entry[1], entry[2]) for entry in items])
        if reason:
            self.request.setResponseCode(status, reason.encode("latin-1"))

    def write(self, data: bytes) -> None:
        if not self.gone:
            self.request.write(data)

    def finish(self) -> None:
        if not self.gone:
            self.request.finish()

    def abort(self) -> None:
        channel = self.request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def register_producer(self, producer: IPushProducer) -> None:
        if not self.gone:
            self._producer = producer
            request: Any = self.request
            request.registerProducer(producer, True)

    def unregister_producer(self) -> None:
        if self._producer is not None:
            self._producer = None
            request: Any = self.request
            if request.channel is not None:
                request.unregisterProducer()

    def splice(self, tunnel: Any) -> None:
        """Give the client connection to ``tunnel``: raw bytes both ways from now on."""
        assert isinstance(tunnel, Tunnel)
        request: Any = self.request
        channel = request.channel
        transport = channel.transport
        original_lost = channel.connectionLost
        channel.setTimeout(None)
        # The HTTP exchange is over for twisted.web: nothing may write a response now.
        request.finished = True
        # Bytes the client sent after the handshake are already buffered in the channel.
        pending = b"".join(getattr(channel, "_dataBuffer", []))
        channel._dataBuffer = []

        def from_client(data: bytes) -> None:
            tunnel.write(data)

        def client_lost(reason: Any = None) -> None:
            tunnel.lose()
            request.finished = False
            original_lost(reason)

        def close_client() -> None:
            transport.loseConnection()
            # Over TLS, also close the TCP connection underneath once our data is out:
            # a WebSocket client waits for TCP EOF, not for a TLS close_notify exchange.
            lower = getattr(transport, "transport", None)
            if lower is not None:
                lower.loseConnection()

        channel.dataReceived = from_client
        channel.connectionLost = client_lost
        channel._networkProducer.resumeProducing()
        tunnel.attach(transport.write, close_client)
        if pending:
            tunnel.write(pending)


class ProxyResource(AsyncResource):
    """The proxy listener's root resource (``isLeaf``: every path is proxied)."""

    def __init__(self, pipeline: ProxyPipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    async def handle(self, request: HTTPRequest) -> None:
        incoming = to_incoming(request)
        await self.pipeline.handle(incoming, WebDownstream(request))

    def error_response(
        self, request: HTTPRequest, error: BaseException
    ) -> tuple[int, Mapping[bytes, bytes], bytes]:
        accept = request.getHeader(b"accept")
        content_type, body = error_page(500, accept.decode("latin-1") if accept else None)
        return 500, {b"Content-Type": content_type.encode("ascii")}, body


def to_incoming(request: HTTPRequest) -> IncomingRequest:
    """The pipeline's view of a twisted.web request."""
    twisted_request: Any = request
    items: list[tuple[str, str]] = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        sname = name.decode("latin-1")
        items.extend((sname, v.decode("latin-1")) for v in values)
    address = twisted_request.getClientAddress()
    peer = getattr(address, "host", "") or ""
    local = twisted_request.getHost()
    channel = request.channel
    serial = getattr(channel, "connection_id", 0)
    served = getattr(channel, "requests_served", 0) + 1
    if channel is not None:
        channel.requests_served = served
    pipe = getattr(twisted_request, "body_pipe", None)
    content = request.content if pipe is None else None
    length = 0
    if content is not None:
        content.seek(0, 2)
        length = content.tell()
        content.seek(0)
    return IncomingRequest(
        method=request.method.decode("ascii"),
        uri=request.uri.decode("latin-1"),
        headers=HeaderList(items),
        peer_ip=peer,
        scheme="https" if request.isSecure() else "http",
        body=content if length else None,
        body_length=length,
        server_addr=getattr(local, "host", "") or "",
        server_port=getattr(local, "port", 0) or 0,
        connection_id=serial,
        connection_requests=served,
        stream=pipe,
        http_version=twisted_request.clientproto.decode("ascii", "replace"),
    )
