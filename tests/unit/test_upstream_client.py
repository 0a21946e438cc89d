"""The pooled upstream client over in-memory connections (kongtx.proxy.upstream)."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream import FileBodyProducer, UpstreamClient, UpstreamResponse
from kongtx.proxy.upstream_request import Origin
from kongtx.proxy.upstream_response import StaleConnection


class PausingTransport(StringTransport):
    """A transport whose buffer is always full: it pauses its producer after each write."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects to a StringTransport (or fails), recording each connection."""

    def __init__(self, test: _Base) -> None:
        self.test = test

    def connect(self, factory: Any) -> Deferred[Any]:
        proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 80))
        transport = PausingTransport() if self.test.pausing else StringTransport()
        proto.makeConnection(transport)
        self.test.connections.append((proto, transport))
        return succeed(proto)


class MemoryClient(UpstreamClient):
    def __init__(self, test: _Base, **kw: Any) -> None:
        super().__init__(test.reactor, Clock(test.reactor), **kw)
        self.test = test

    def endpoint_for(self, scheme: bytes, host: bytes, port: int) -> Any:
        if self.test.refuse:

            class Refusing:
                def connect(self, factory: Any) -> Deferred[Any]:
                    d: Deferred[Any] = Deferred()
                    d.errback(Failure(ConnectionRefusedError()))
                    return d

            return implementer(IStreamClientEndpoint)(Refusing)()
        return MemoryEndpoint(self.test)


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.finished = False
        self.failed: Failure | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self) -> None:
        self.finished = True

    def fail(self, reason: Failure) -> None:
        self.failed = reason


class _Base(SynchronousTestCase):
    """In-memory connections and a request helper (no tests of its own)."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.connections: list[tuple[Any, StringTransport]] = []
        self.refuse = False
        self.pausing = False

    def request(
        self,
        client: UpstreamClient,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        method: str = "GET",
    ) -> Deferred[UpstreamResponse]:
        return Deferred.fromCoroutine(
            client.request(
                method,
                "http://10.0.0.2/path?q=1",
                HeaderList(headers or [("Host", "up.com")]),
                io.BytesIO(body) if body else None,
                len(body or b""),
            )
        )


class ClientTests(_Base):
    def test_request_bytes_framed_by_client(self) -> None:
        """The request line and headers go out once; framing comes from the body, not the client."""
        client = MemoryClient(self)
        d = self.request(
            client,
            [
                ("Host", "up.com"),
                ("Content-Length", "999"),
                ("Transfer-Encoding", "chunked"),
                ("X-A", "1"),
            ],
            b"hello",
            "POST",
        )
        self.assertNoResult(d)
        sent = self.connections[0][1].value()
        assert sent.startswith(b"POST /path?q=1 HTTP/1.1\r\n")
        assert b"Content-Length: 5\r\n" in sent and b"999" not in sent
        assert b"chunked" not in sent.lower()
        assert b"Connection: close" not in sent  # keep-alive pool
        assert sent.endswith(b"\r\n\r\nhello")

    def test_response_streams_and_connection_reused(self) -> None:
        """Status, headers and body arrive; the connection returns to the pool afterwards."""
        client = MemoryClient(self)
        d = self.request(client)
        proto, transport = self.connections[0]
        proto.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\nX-Up: 1\r\n\r\n"
        )
        response = self.successResultOf(d)
        assert response.status == 200 and response.length == 4
        assert response.headers.get("x-up") == "1"
        assert response.headers.get("keep-alive") is None
        assert response.headers.get("connection") is None
        sink = Sink()
        response.deliver(sink)
        proto.dataReceived(b"da")
        proto.dataReceived(b"ta")
        assert sink.data == b"data" and sink.finished and sink.failed is None
        d2 = self.request(client)
        self.assertNoResult(d2)
        assert len(self.connections) == 1  # same connection, reused

    def test_read_timeout_before_headers_is_504(self) -> None:
        """No response headers within upstream_read_timeout -> UpstreamError 504."""
        client = MemoryClient(self, read_timeout=500)
        d = self.request(client)
        self.reactor.advance(0.4)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        err = self.failureResultOf(d, UpstreamError)
        assert err.value.status == 504

    def test_read_timeout_mid_body_fails_sink(self) -> None:
        """A body that stalls longer than the read timeout fails the sink (client aborted)."""
        client = MemoryClient(self, read_timeout=500)
        d = self.request(client)
        proto, transport = self.connections[0]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        response = self.successResultOf(d)
        sink = Sink()
        response.deliver(sink)
        proto.dataReceived(b"12345")
        self.reactor.advance(0.4)
        proto.dataReceived(b"6")
        self.reactor.advance(0.4)
        assert sink.failed is None
        self.reactor.advance(0.2)
        assert transport.disconnecting
        proto.connectionLost(Failure(ConnectionRefusedError()))
        assert sink.failed is not None and not sink.finished

    def test_paused_client_suspends_read_timeout(self) -> None:
        """While the client is slow (producer paused) the read timeout does not run."""
        client = MemoryClient(self, read_timeout=500)
        d = self.request(client)
        proto, transport = self.connections[0]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        response = self.successResultOf(d)
        sink = Sink()
        response.deliver(sink)
        response.pauseProducing()
        assert transport.producerState == "paused"
        self.reactor.advance(5)
        assert not transport.disconnecting
        response.resumeProducing()
        assert transport.producerState == "producing"

    def test_refused_is_502(self) -> None:
        """A refused connection -> UpstreamError 502."""
        self.refuse = True
        client = MemoryClient(self)
        err = self.failureResultOf(self.request(client), UpstreamError)
        assert err.value.status == 502

    def test_garbage_response_is_502(self) -> None:
        """A response that is not HTTP -> UpstreamError 502."""
        client = MemoryClient(self)
        d = self.request(client)
        proto, _ = self.connections[0]
        proto.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        err = self.failureResultOf(d, UpstreamError)
        assert err.value.status == 502

    def test_cancel_aborts_upstream(self) -> None:
        """Cancelling the request (client gone) drops the upstream connection."""
        client = MemoryClient(self)
        d = self.request(client)
        _, transport = self.connections[0]
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert transport.disconnecting or transport.disconnected  # type: ignore[attr-defined]


class ProducerTests(SynchronousTestCase):
    def test_pauses_and_resumes(self) -> None:
        """The body producer stops writing when paused and finishes after resuming."""
        progress: list[int] = []
        data = b"x" * (64 * 1024 * 3 + 10)
        producer = FileBodyProducer(io.BytesIO(data), len(data), lambda: progress.append(1))

        class Consumer:
            def __init__(self) -> None:
                self.got = b""

            def write(self, chunk: bytes) -> None:
                self.got += chunk
                producer.pauseProducing()

        consumer = Consumer()
        done = producer.startProducing(consumer)  # type: ignore[arg-type]
        assert len(consumer.got) == 64 * 1024
        self.assertNoResult(done)
        for _ in range(3):
            producer.resumeProducing()
        self.successResultOf(done)
        assert consumer.got == data and len(progress) == 4

    def test_short_body_fails(self) -> None:
        """A spool shorter than the announced length fails instead of hanging."""
        producer = FileBodyProducer(io.BytesIO(b"abc"), 10, lambda: None)

        class Consumer:
            def write(self, chunk: bytes) -> None:
                pass

        self.failureResultOf(producer.startProducing(Consumer()), OSError)  # type: ignore[arg-type]


class LeanClientTests(_Base):
    """Behaviours of the lean client beyond the basics above."""

    def respond(self, index: int, data: bytes) -> None:
        proto, _ = self.connections[index]
        proto.dataReceived(data)

    def test_stale_pooled_connection_retried(self) -> None:
        """A pooled connection that dies before any response byte is replaced, once."""
        client = MemoryClient(self)
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d).deliver(Sink())
        d2 = self.request(client)
        assert len(self.connections) == 1
        proto, transport = self.connections[0]
        proto.connectionLost(Failure(ConnectionRefusedError()))  # upstream closed it idle
        assert len(self.connections) == 2
        self.respond(1, b"HTTP/1.1 204 No Content\r\n\r\n")
        assert self.successResultOf(d2).status == 204

    def test_start_pooled(self) -> None:
        """start_pooled: ``None`` without a pooled connection (nothing is connected); on
        one, the exchange's Deferred; a stale one is retried once on a new connection."""
        client = MemoryClient(self)
        url = "http://10.0.0.2/path?q=1"
        headers = HeaderList([("Host", "up.com")])
        assert client.start_pooled("GET", url, headers, None, 0) is None
        assert self.connections == []
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d).deliver(Sink())
        pooled = client.start_pooled("GET", url, headers, None, 0)
        assert pooled is not None and len(self.connections) == 1
        _, transport = self.connections[0]
        assert transport.value().count(b"GET /path?q=1 HTTP/1.1\r\n") == 2
        self.respond(0, b"HTTP/1.1 204 No Content\r\n\r\n")
        response = self.successResultOf(pooled)
        assert response.status == 204
        response.deliver(Sink())
        stale = client.start_pooled("GET", url, headers, None, 0)
        assert stale is not None
        proto, _ = self.connections[0]
        proto.connectionLost(Failure(ConnectionRefusedError()))  # upstream closed it idle
        assert len(self.connections) == 2
        self.respond(1, b"HTTP/1.1 204 No Content\r\n\r\n")
        assert self.successResultOf(stale).status == 204

    def test_pooled_exchange_tells_its_listener(self) -> None:
        """pooled_exchange with a listener: no Deferred; the response, a stale connection
        (for the listener to retry on a new one) and a cancel, told directly or not at all."""

        class Listener:
            def __init__(self) -> None:
                self.got: list[Any] = []

            def response(self, response: Any) -> None:
                self.got.append(response.status)

            def failed(self, failure: Failure) -> None:
                self.got.append(failure.type)

        client = MemoryClient(self)
        url = "http://10.0.0.2/path"
        headers = HeaderList([("Host", "up.com")])
        listener = Listener()
        assert client.pooled_exchange("GET", url, headers, None, 0, listener) is None
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d).deliver(Sink())
        exchange = client.pooled_exchange("GET", url, headers, None, 0, listener)
        assert exchange is not None and exchange.result is None
        exchange.begin()
        self.respond(0, b"HTTP/1.1 204 No Content\r\n\r\n")
        assert listener.got == [204]
        exchange.response.deliver(Sink())  # type: ignore[union-attr]
        stale = client.pooled_exchange("GET", url, headers, None, 0, listener)
        assert stale is not None
        stale.begin()
        proto, _ = self.connections[0]
        proto.connectionLost(Failure(ConnectionRefusedError()))  # upstream closed it idle
        assert listener.got == [204, StaleConnection]
        # the retry takes the API's origin, split once, as the first attempt did
        retried = client.retry_on_new_connection(
            "GET", url, headers, None, 0, Origin("http://10.0.0.2")
        )
        assert self.connections[1][1].value().startswith(b"GET /path HTTP/1.1\r\n")
        self.respond(1, b"HTTP/1.1 204 No Content\r\n\r\n")
        self.successResultOf(retried).deliver(Sink())
        cancelled = client.pooled_exchange("GET", url, headers, None, 0, listener)
        assert cancelled is not None
        cancelled.begin()
        cancelled.cancel()
        assert listener.got == [204, StaleConnection]  # nothing told after a cancel
        _, transport = self.connections[1]
        assert transport.disconnecting or transport.disconnected  # abandoned: never reused

    def test_fresh_connection_not_retried(self) -> None:
        """A new connection closed before a response is a 502, not a retry."""
        client = MemoryClient(self)
        d = self.request(client)
        proto, _ = self.connections[0]
        proto.connectionLost(Failure(ConnectionRefusedError()))
        err = self.failureResultOf(d, UpstreamError)
        assert err.value.status == 502 and len(self.connections) == 1

    def test_head_response_complete_after_headers(self) -> None:
        """A HEAD response ends with its headers; its Content-Length is reported."""
        client = MemoryClient(self)
        d = self.request(client, method="HEAD")
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        response = self.successResultOf(d)
        assert response.length == 1234
        sink = Sink()
        response.deliver(sink)
        assert sink.finished and sink.data == b""

    def test_interim_100_skipped(self) -> None:
        """A 100 Continue before the response is skipped."""
        client = MemoryClient(self)
        d = self.request(client)
        self.respond(
            0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
        )
        response = self.successResultOf(d)
        assert response.status == 201
        sink = Sink()
        response.deliver(sink)
        assert sink.data == b"ok" and sink.finished

    def test_chunked_response_decoded(self) -> None:
        """A chunked response arrives decoded, length unknown, Transfer-Encoding dropped."""
        client = MemoryClient(self)
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        response = self.successResultOf(d)
        assert response.length is None and response.headers.get("transfer-encoding") is None
        sink = Sink()
        response.deliver(sink)
        self.respond(0, b"2\r\nde\r\n0\r\n\r\n")
        assert sink.data == b"abcde" and sink.finished

    def test_read_until_close(self) -> None:
        """A response without length or chunking ends when the upstream closes."""
        client = MemoryClient(self)
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart")
        response = self.successResultOf(d)
        sink = Sink()
        response.deliver(sink)
        proto, _ = self.connections[0]
        from twisted.internet.error import ConnectionDone

        proto.connectionLost(Failure(ConnectionDone()))
        assert sink.data == b"part" and sink.finished and sink.failed is None

    def test_truncated_body_fails(self) -> None:
        """A Content-Length body cut short fails the sink instead of finishing it."""
        client = MemoryClient(self)
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        response = self.successResultOf(d)
        sink = Sink()
        response.deliver(sink)
        proto, _ = self.connections[0]
        proto.connectionLost(Failure(ConnectionRefusedError()))
        assert sink.failed is not None and not sink.finished

    def test_header_injection_refused(self) -> None:
        """A header value with CR/LF (a plugin's doing) never reaches the upstream."""
        client = MemoryClient(self)
        d = self.request(client, [("Host", "up.com"), ("X-A", "1\r\nX-Injected: 1")])
        err = self.failureResultOf(d, UpstreamError)
        assert err.value.status == 502 and self.connections == []

    def test_early_response_stops_upload(self) -> None:
        """An upstream answering mid-upload stops the upload; the connection is not reused."""
        self.pausing = True
        client = MemoryClient(self)
        body = b"z" * (64 * 1024 * 4)
        d = self.request(client, body=body, method="POST")
        proto, transport = self.connections[0]
        assert len(transport.value()) < len(body)  # still uploading
        self.respond(0, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        response = self.successResultOf(d)
        assert response.status == 413
        sink = Sink()
        response.deliver(sink)
        assert sink.finished
        d2 = self.request(client)
        assert len(self.connections) == 2
        self.assertNoResult(d2)

    def test_keepalive_zero_closes(self) -> None:
        """upstream_keepalive = 0: every connection is closed after its response."""
        client = MemoryClient(self, keepalive=0)
        d = self.request(client)
        self.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d).deliver(Sink())
        assert self.connections[0][1].disconnecting


def test_split_url() -> None:
    """Absolute URLs split into scheme, host, port and target (defaults per scheme)."""
    from kongtx.proxy.upstream import split_url

    assert split_url("http://H.com/a?b") == ("http", "h.com", 80, "/a?b")
    assert split_url("https://h.com:8443") == ("https", "h.com", 8443, "/")
    assert split_url("http://[::1]:81/x") == ("http", "::1", 81, "/x")
    assert split_url("https://h.com?q=1") == ("https", "h.com", 443, "/?q=1")


class BackpressureTests(_Base):
    def test_upload_follows_transport_backpressure(self) -> None:
        """The body is written as fast as the transport drains, then the read timeout runs."""
        self.pausing = True
        client = MemoryClient(self, send_timeout=1000, read_timeout=1000)
        body = bytes(range(256)) * 1024
        d = self.request(client, body=body, method="PUT")
        _, transport = self.connections[0]
        while transport.producer is not None and len(transport.value()) < len(body):
            self.reactor.advance(0.5)  # never 1 s without progress: no send timeout
            transport.producer.resumeProducing()
        assert transport.value().endswith(body)
        self.reactor.advance(0.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        assert self.failureResultOf(d, UpstreamError).value.status == 504

    def test_send_timeout(self) -> None:
        """An upstream that stops reading the body: 504 after upstream_send_timeout."""
        self.pausing = True
        client = MemoryClient(self, send_timeout=1000, read_timeout=60000)
        d = self.request(client, body=b"q" * (64 * 1024 * 3), method="POST")
        self.reactor.advance(0.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        err = self.failureResultOf(d, UpstreamError)
        assert err.value.status == 504 and "send" in err.value.reason


class PausedReleaseTests(_Base):
    def test_connection_released_while_paused_reads_again(self) -> None:
        """A response that ends while the client paused it leaves its connection reading."""
        client = MemoryClient(self)
        d = self.request(client)
        proto, transport = self.connections[0]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
        proto.dataReceived(b"\r\nok")
        response = self.successResultOf(d)
        response.pauseProducing()
        assert transport.producerState == "paused"
        response.deliver(Sink())
        assert transport.producerState == "producing"
        d2 = self.request(client)
        assert len(self.connections) == 1  # reused, and reading
        self.assertNoResult(d2)
