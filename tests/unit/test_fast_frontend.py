"""The fast proxy front-end (kongtx.proxy.fast): exact bytes in, responses and refusals out.

The pipeline is replaced by a recorder; the protocol runs on a StringTransport.
"""

from __future__ import annotations

from typing import Any

import httptools
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock as TaskClock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.proxy.express import ExpressRequest
from kongtx.proxy.fast import FastProxyFactory, FastProxyProtocol
from kongtx.proxy.fast_writing import status_line
from kongtx.proxy.pipeline import IncomingRequest
from kongtx.proxy.tunnel import Tunnel


class GateRequest(ExpressRequest):
    """Stands for the pipeline's express request: ends when its gate fires."""

    __slots__ = ("gate",)

    def __init__(self, gate: Deferred[None]) -> None:  # no pipeline behind it
        self.gate = gate
        self.done = False
        self.error = None
        self._on_end = None
        self.tag = None

    def cancel(self) -> None:
        self.gate.cancel()

    def ended(self, error: BaseException | None) -> None:
        self.done = True
        self.error = error
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self, error)


class Recorder:
    """Stands for the pipeline: records requests, answers ``ok`` (or waits when gated)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.incoming: list[IncomingRequest] = []
        self.gates: list[Deferred[None]] = []
        self.gated = False
        self.headers: list[tuple[str, str]] | None = None
        self.fail = False
        self.cancelled = 0
        self.action: Any = None

    #: ``start`` answers as the pipeline's express path (a Deferred, no coroutine)
    express = False

    def start(self, incoming: IncomingRequest, down: Any) -> Any:
        """As ``ProxyPipeline.start``: the coroutine serving the request (general path),
        or with :attr:`express` the Deferred it waits on, answering when it fires."""
        if not self.express:
            return self.handle(incoming, down)
        self.incoming.append(incoming)
        self.seen.append((incoming.method, incoming.uri, b""))

        def cancelled(_: object) -> None:
            self.cancelled += 1

        gate: Deferred[None] = Deferred(cancelled)
        self.gates.append(gate)
        waiting = GateRequest(gate)

        def answer(_: object) -> None:
            if self.fail:
                raise RuntimeError("boom")
            down.send_head(200, [("Content-Length", "2")])
            down.write(b"ok")
            down.finish()

        gate.addCallback(answer).addBoth(
            lambda r: waiting.ended(r.value if isinstance(r, Failure) else None)
        )
        return waiting

    async def handle(self, incoming: IncomingRequest, down: Any) -> None:
        self.incoming.append(incoming)
        if self.action is not None:
            await self.action(incoming, down)
            return
        body = b""
        if incoming.body is not None:
            body = incoming.body.read()
        self.seen.append((incoming.method, incoming.uri, body))
        if self.gated:
            gate: Deferred[None] = Deferred()
            self.gates.append(gate)
            try:
                await gate
            except CancelledError:
                self.cancelled += 1
                raise
        if self.fail:
            raise RuntimeError("boom")
        headers = self.headers if self.headers is not None else [("Content-Length", "2")]
        down.send_head(200, list(headers))
        down.write(b"ok")
        down.finish()


def connect(
    max_header_size: int = 8192, threshold: int = 1024 * 1024
) -> tuple[FastProxyProtocol, StringTransport, Recorder, FastProxyFactory]:
    recorder = Recorder()
    factory = FastProxyFactory(recorder, max_header_size, threshold)  # type: ignore[arg-type]
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "10.0.0.1", 8000),
        peerAddress=IPv4Address("TCP", "192.0.2.7", 5555),
    )
    proto.makeConnection(transport)
    return proto, transport, recorder, factory


def send(data: bytes, max_header_size: int = 8192) -> tuple[bytes, Recorder, StringTransport]:
    proto, transport, recorder, _ = connect(max_header_size)
    proto.dataReceived(data)
    return transport.value(), recorder, transport


def closing(transport: StringTransport) -> bool:
    """Whether the protocol asked the transport to close (not narrowed by mypy)."""
    return bool(transport.disconnecting)


def assert_rejected(data: bytes, status: bytes = b"400") -> None:
    out, recorder, transport = send(data)
    assert out.startswith(b"HTTP/1.1 " + status), out
    assert b"Server: kong/0.9.9" in out and b"Connection: close" in out
    assert transport.disconnecting
    assert recorder.seen == []


# ---------------------------------------------------------------- serving


def test_plain_request_served_with_its_details() -> None:
    """A GET reaches the pipeline with method, URI, headers, peer and local addresses."""
    out, rec, transport = send(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert rec.seen == [("GET", "/a?b=1", b"")]
    incoming = rec.incoming[0]
    assert incoming.headers.get_all("x-two") == ["1", "2"]
    assert incoming.headers.get("HOST") == "x"
    assert (incoming.peer_ip, incoming.server_addr, incoming.server_port) == (
        "192.0.2.7",
        "10.0.0.1",
        8000,
    )
    assert (incoming.scheme, incoming.connection_id, incoming.connection_requests) == (
        "http",
        1,
        1,
    )
    assert not transport.disconnecting


def test_keep_alive_serves_next_requests() -> None:
    """Requests on one connection are each answered; the request counter goes up."""
    proto, transport, rec, _ = connect()
    proto.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    proto.dataReceived(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    assert [i.connection_requests for i in rec.incoming] == [1, 2]


def test_pipelined_responses_in_order() -> None:
    """A pipelined request waits for the response before it: answers never interleave."""
    proto, transport, rec, _ = connect()
    rec.gated = True
    proto.dataReceived(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert rec.seen == [("POST", "/a", b"abc")]
    assert transport.value() == b""
    rec.gates[0].callback(None)
    assert rec.seen == [("POST", "/a", b"abc"), ("GET", "/b", b"")]
    assert transport.value().count(b"HTTP/1.1 200") == 1
    rec.gates[1].callback(None)
    assert transport.value().count(b"HTTP/1.1 200") == 2


def test_bodies_in_pieces_each_their_own() -> None:
    """A body read in pieces is its request's alone (a request without a body shares an
    empty chunk list that nothing appends to)."""
    from kongtx.proxy import fast_parsing

    proto, transport, rec, _ = connect()
    proto.dataReceived(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    proto.dataReceived(b"c")
    proto.dataReceived(b"de")
    proto.dataReceived(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    proto.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nf")
    proto.dataReceived(b"g")
    assert rec.seen == [("POST", "/a", b"abcde"), ("GET", "/b", b""), ("POST", "/c", b"fg")]
    assert fast_parsing._NO_CHUNKS == []


def test_chunked_request_body_decoded() -> None:
    """A correct chunked body reaches the pipeline as a stream and is decoded."""
    proto, transport, rec, _ = connect()
    chunks: list[bytes] = []

    async def read(incoming: IncomingRequest, down: Any) -> None:
        assert incoming.stream is not None and incoming.stream.declared_length is None
        chunks.append(await incoming.stream.read_all())
        down.send_head(204, [])
        down.finish()

    rec.action = read
    proto.dataReceived(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    assert chunks == [b"abcde"]
    assert transport.value() == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_response_without_length_is_chunked() -> None:
    """No Content-Length from the pipeline: HTTP/1.1 gets a chunked response."""
    proto, transport, rec, _ = connect()
    rec.headers = [("X-A", "1")]
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )


def test_http10_without_length_closes() -> None:
    """HTTP/1.0 without a length: the body ends with the connection."""
    proto, transport, rec, _ = connect()
    rec.headers = []
    proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"
    assert transport.disconnecting


def test_http10_keep_alive_kept() -> None:
    """HTTP/1.0 asking for keep-alive gets it when the response has a length."""
    proto, transport, rec, _ = connect()
    proto.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"Connection: keep-alive\r\n" in transport.value()
    assert not transport.disconnecting


def test_http10_with_a_length_and_no_connection_header_closes() -> None:
    """HTTP/1.0 without ``Connection: keep-alive`` is closed after its response, even one
    with a length (and a Host header); HTTP/1.1 without any is kept."""
    out, _, transport = send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    assert transport.disconnecting
    out, _, transport = send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert not transport.disconnecting


def test_connection_close_honoured() -> None:
    """``Connection: close`` from the client: answered, then closed."""
    out, _, transport = send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Connection: close\r\n" in out and transport.disconnecting


def test_head_response_has_no_body() -> None:
    """HEAD: the head (with the GET's length) and no body bytes."""
    out, _, _ = send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


def test_handler_failure_is_500() -> None:
    """An unexpected exception before the head: a 500 error page, the connection stays."""
    proto, transport, rec, _ = connect()
    rec.fail = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"application/json" in out and b"Server: kong/0.9.9" in out


def test_client_gone_cancels_the_pipeline() -> None:
    """A client that disconnects mid-request cancels the pipeline (and so the upstream)."""
    proto, _, rec, factory = connect()
    rec.gated = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    proto.connectionLost()
    assert rec.cancelled == 1
    assert factory.channels == {}


def test_express_requests_served_in_order() -> None:
    """A pipeline that waits on an express request: pipelined answers in order."""
    proto, transport, rec, _ = connect()
    rec.express = True
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [s[1] for s in rec.seen] == ["/a"]
    rec.gates[0].callback(None)
    assert [s[1] for s in rec.seen] == ["/a", "/b"]
    assert transport.value().count(b"HTTP/1.1 200") == 1
    rec.gates[1].callback(None)
    assert transport.value().count(b"HTTP/1.1 200") == 2
    assert not closing(transport)


def test_express_failure_is_500_and_client_gone_cancels() -> None:
    """The express request: a failure is the 500 page, a lost client cancels it."""
    proto, transport, rec, factory = connect()
    rec.express = rec.fail = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rec.gates[0].callback(None)
    assert transport.value().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    proto.connectionLost()
    assert rec.cancelled == 1
    assert factory.channels == {}


def test_expect_continue_answered() -> None:
    """``Expect: 100-continue`` gets an interim 100 before the body is sent."""
    proto, transport, rec, _ = connect()
    proto.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.dataReceived(b"abc")
    assert transport.value().count(b"HTTP/1.1 200 OK") == 1


def test_status_lines() -> None:
    """Known statuses carry their reason phrase; unknown ones still frame correctly."""
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"


# ---------------------------------------------------------------- refusals


def test_cl_and_te_rejected() -> None:
    """Content-Length together with Transfer-Encoding is refused (CL.TE / TE.CL smuggling)."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
        b"0\r\n\r\n"
    )


@pytest.mark.parametrize("second", [b"5", b"3"])
def test_duplicate_content_length_rejected(second: bytes) -> None:
    """A repeated Content-Length is refused, differing or not."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: "
        + second
        + b"\r\n\r\nabc"
    )


@pytest.mark.parametrize("value", [b"+3", b"-3", b"0x3", b"3 3", b"3a", b"abc", b"", b"3, 3"])
def test_bad_content_length_rejected(value: bytes) -> None:
    """Signed, hex, spaced, listed or garbage Content-Length values are refused."""
    assert_rejected(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nabc")


@pytest.mark.parametrize("size", [b"0x3", b"+3", b"-3", b"3 ", b"g", b"", b"1" * 17])
def test_bad_chunk_size_rejected(size: bytes) -> None:
    """Chunk sizes that are not plain hex, or do not fit 64 bits, are refused."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\nabc\r\n0\r\n\r\n"
    )


def test_missing_chunk_crlf_rejected() -> None:
    """Chunk data not followed by CRLF is refused before anything is served."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize(
    "value", [b"identity", b"gzip", b"chunked, identity", b"gzip, chunked", b"xchunked"]
)
def test_other_transfer_encodings_rejected(value: bytes) -> None:
    """Only ``Transfer-Encoding: chunked`` is accepted."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n"
    )


def test_transfer_encoding_twice_rejected() -> None:
    """Two Transfer-Encoding headers are refused."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )


def test_te_in_http10_rejected() -> None:
    """Transfer-Encoding in an HTTP/1.0 request is refused."""
    assert_rejected(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_obs_fold_rejected() -> None:
    """A folded header line (leading space or tab) is refused."""
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n")
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\nX-Smuggle: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_heads_rejected(data: bytes) -> None:
    """Space before a colon, bare LF, NUL in a value, malformed request lines: 400."""
    assert_rejected(data)


def test_long_uri_is_414() -> None:
    """A request line over client_max_header_size gets 414 and the connection closes."""
    assert_rejected(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414")


def test_long_uri_in_pieces_is_414() -> None:
    """The 414 also fires when the line arrives in pieces without a CRLF yet."""
    proto, transport, _, _ = connect()
    proto.dataReceived(b"GET /")
    for _ in range(10):
        proto.dataReceived(b"a" * 1000)
    assert transport.value().startswith(b"HTTP/1.1 414")


def test_large_headers_are_431() -> None:
    """Headers summing over client_max_header_size get 431 and the connection closes."""
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", b"431")


def test_endless_header_in_pieces_is_431() -> None:
    """One header value that never ends, sent slowly, is cut off at the limit too."""
    proto, transport, _, _ = connect()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    for _ in range(12):
        proto.dataReceived(b"v" * 1000)
    assert transport.value().startswith(b"HTTP/1.1 431")


def test_header_limit_configurable_and_per_request() -> None:
    """The limit is client_max_header_size, counted per request, not per connection."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 200 + b"\r\n\r\n"
    assert send(request)[0].startswith(b"HTTP/1.1 200")
    assert send(request, max_header_size=128)[0].startswith(b"HTTP/1.1 431")
    one = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 3000 + b"\r\n\r\n"
    assert len(send(one * 4)[1].seen) == 4


def test_refusal_waits_for_earlier_response_then_closes() -> None:
    """A good request then a bad one: the first is answered, then 400, then close."""
    proto, transport, rec, _ = connect()
    rec.gated = True
    proto.dataReceived(
        b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert transport.value() == b""
    rec.gates[0].callback(None)
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 Bad Request" in out
    assert transport.disconnecting
    assert [s[1] for s in rec.seen] == ["/good"]


def test_nothing_after_rejection_is_parsed() -> None:
    """After a refusal, bytes that follow on the connection are ignored."""
    proto, transport, rec, _ = connect()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n fold\r\n\r\n")
    proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert rec.seen == []
    assert transport.value().count(b"HTTP/1.1") == 1


# ---------------------------------------------------------------- bodies


def test_large_body_streams_and_early_answer_closes() -> None:
    """A body over the threshold starts the pipeline at once; answering early closes."""
    proto, transport, rec, _ = connect(threshold=10)
    streams: list[Any] = []

    async def early(incoming: IncomingRequest, down: Any) -> None:
        streams.append(incoming.stream)
        down.send_head(401, [("Content-Length", "0")])
        down.finish()

    rec.action = early
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 20)
    assert streams[0] is not None and streams[0].declared_length == 100
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 401") and b"Connection: close\r\n" in out
    assert transport.disconnecting
    proto.dataReceived(b"x" * 80 + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(rec.incoming) == 1


def test_small_body_read_whole_first() -> None:
    """A body under the threshold arrives whole (replayable) before the pipeline runs."""
    proto, _, rec, _ = connect()
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    assert rec.seen == []
    proto.dataReceived(b"def")
    assert rec.seen == [("POST", "/", b"abcdef")]
    assert rec.incoming[0].body_length == 6 and rec.incoming[0].stream is None


def test_slow_client_backpressure() -> None:
    """A streamed body nobody consumes pauses the client above the pipe's high mark."""
    proto, transport, rec, _ = connect(threshold=10)
    rec.gated = True
    rec.action = None

    async def hold(incoming: IncomingRequest, down: Any) -> None:
        await Deferred()

    rec.action = hold
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    proto.dataReceived(b"x" * 300_000)
    assert transport.producerState == "paused"


# ---------------------------------------------------------------- upgrade


def test_upgrade_spliced_to_tunnel() -> None:
    """An Upgrade the pipeline tunnels: bytes after the handshake go raw both ways."""
    proto, transport, rec, _ = connect()
    tunnel = Tunnel()
    upstream = StringTransport()
    tunnel.makeConnection(upstream)

    async def splice(incoming: IncomingRequest, down: Any) -> None:
        down.splice(tunnel)

    rec.action = splice
    proto.dataReceived(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY"
    )
    assert upstream.value() == b"EARLY"
    proto.dataReceived(b"MORE")
    assert upstream.value() == b"EARLYMORE"
    tunnel.dataReceived(b"FROM-UPSTREAM")
    assert transport.value() == b"FROM-UPSTREAM"
    proto.connectionLost()
    assert upstream.disconnecting


def test_upgrade_not_tunnelled_goes_on_with_http() -> None:
    """An Upgrade request answered normally (a 404...) leaves the connection HTTP."""
    proto, transport, rec, _ = connect()
    proto.dataReceived(
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [s[1] for s in rec.seen] == ["/x", "/next"]
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2


# ---------------------------------------------------------------- counters, drain


def test_stats_count_connections_and_requests() -> None:
    """stats() has TrackingSite's keys: active, writing, waiting, accepted, handled, requests."""
    proto, _, rec, factory = connect()
    rec.gated = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    stats = factory.stats()
    assert stats == {
        "connections_active": 1,
        "connections_reading": 0,
        "connections_writing": 1,
        "connections_waiting": 0,
        "connections_accepted": 1,
        "connections_handled": 1,
        "total_requests": 1,
    }
    rec.gates[0].callback(None)
    assert factory.stats()["connections_waiting"] == 1


def test_drain_closes_idle_after_grace_and_busy_after_response() -> None:
    """drain(): busy connections close after their response, idle ones after the grace."""
    idle, idle_transport, _, factory = connect()
    busy = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6666))
    busy_transport = StringTransport()
    busy.makeConnection(busy_transport)
    rec: Any = factory.pipeline
    rec.gated = True
    busy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock = TaskClock()
    done = factory.drain(Clock(clock), 5.0, idle_grace=1.0)
    assert not closing(idle_transport) and not closing(busy_transport)
    rec.gates[0].callback(None)
    out = busy_transport.value()
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in out
    assert closing(busy_transport)
    busy.connectionLost()
    clock.advance(0.5)
    assert not closing(idle_transport)
    clock.advance(0.55)
    assert closing(idle_transport)
    idle.connectionLost()
    clock.advance(0.05)
    assert done.called


def test_draining_connection_answers_next_request_with_close() -> None:
    """An idle keep-alive connection that sends during the drain is served, then closed."""
    proto, transport, _, factory = connect()
    factory.drain(Clock(TaskClock()), 5.0)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in out
    assert closing(transport)


def test_drain_aborts_after_timeout() -> None:
    """A request still running when the drain timeout passes is cut off."""
    proto, transport, rec, factory = connect()
    rec.gated = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock = TaskClock()
    done = factory.drain(Clock(clock), 1.0)
    clock.advance(1.0)
    clock.advance(0.05)
    assert done.called
    assert transport.disconnecting


def test_idle_connection_closed_after_timeout() -> None:
    """A connection idle for idle_timeout seconds is closed; a busy one is not."""
    clock = TaskClock()
    rec = Recorder()
    factory = FastProxyFactory(rec, clock=Clock(clock), idle_timeout=10.0)  # type: ignore[arg-type]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    clock.advance(6)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # activity at t=6
    clock.advance(4)  # t=10: idle for 4 s only
    assert not closing(transport)
    rec.gated = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(30)  # busy the whole time
    assert not closing(transport)
    rec.gates[0].callback(None)  # done at t=40
    clock.advance(9.9)
    assert not closing(transport)
    clock.advance(0.2)
    assert closing(transport)
    proto.connectionLost()
    assert clock.getDelayedCalls() == []


def test_awaited_failure_reaches_the_pipeline() -> None:
    """A Deferred the pipeline awaits that fails raises in it (here unhandled: a 500 page)."""
    proto, transport, rec, _ = connect()
    rec.gated = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rec.gates[0].errback(ValueError("upstream exploded"))
    assert transport.value().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [s[1] for s in rec.seen] == ["/", "/next"]


def test_awaited_value_is_sent_in() -> None:
    """The value a Deferred fires with is what ``await`` returns in the pipeline."""
    proto, transport, rec, _ = connect()
    got: list[object] = []
    gate: Deferred[str] = Deferred()

    async def wait(incoming: IncomingRequest, down: Any) -> None:
        got.append(await gate)
        down.send_head(204, [])
        down.finish()

    rec.action = wait
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    gate.callback("value")
    assert got == ["value"]
    assert transport.value() == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_keep_alive_and_upgrade_are_llhttps(head: bytes) -> None:
    """Keep-alive and upgrade are what llhttp says, also where the reader does not ask it
    (an HTTP/1.1 request without Connection, Proxy-Connection or Upgrade headers)."""

    class Asked:
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.answers: tuple[bool, bool] | None = None

        def on_headers_complete(self) -> None:
            self.answers = (
                bool(self.parser.should_keep_alive()),
                bool(self.parser.should_upgrade()),
            )

    asked = Asked()
    try:
        asked.parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    proto, _, recorder, _ = connect()
    recorder.gated = True
    proto.dataReceived(head)
    served = proto._serving
    assert served is not None and asked.answers == (served.keep_alive, served.upgrade)
