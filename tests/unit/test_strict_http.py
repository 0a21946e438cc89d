"""The proxy's strict HTTP channel: exact bytes in, refusals out (kongtx.proxy.http)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from kongtx.proxy.http import ProxySite, StrictHTTPChannel


class Recorder(Resource):
    """Answers 200 and remembers what reached it (what would go upstream)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, bytes]] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.seen.append((request.method, request.uri, body))
        return b"ok"


def connect(max_header_size: int = 8192) -> tuple[StrictHTTPChannel, StringTransport, Recorder]:
    recorder = Recorder()
    site = ProxySite(recorder, max_header_size=max_header_size)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    assert isinstance(channel, StrictHTTPChannel)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, recorder


def send(data: bytes, max_header_size: int = 8192) -> tuple[bytes, Recorder, StringTransport]:
    channel, transport, recorder = connect(max_header_size)
    channel.dataReceived(data)
    return transport.value(), recorder, transport


def assert_rejected(data: bytes, status: bytes = b"400") -> Recorder:
    out, recorder, transport = send(data)
    assert out.startswith(b"HTTP/1.1 " + status), out
    assert b"Server: kong/0.9.9" in out
    assert transport.disconnecting
    assert recorder.seen == []
    return recorder


def test_plain_request_passes() -> None:
    """A well-formed request reaches the resource and is answered."""
    out, rec, _ = send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert rec.seen == [(b"GET", b"/a", b"")]


def test_pipelined_requests_both_served() -> None:
    """Two well-formed pipelined requests are both served, in order."""
    _, rec, _ = send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert rec.seen == [(b"POST", b"/a", b"abc"), (b"GET", b"/b", b"")]


def test_chunked_body_passes() -> None:
    """A correct chunked body is decoded."""
    _, rec, _ = send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    assert rec.seen == [(b"POST", b"/a", b"abcde")]


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


def test_differing_duplicate_content_length_rejected() -> None:
    """Two different Content-Length values are refused."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc"
    )


@pytest.mark.parametrize("value", [b"+3", b"-3", b"0x3", b"3 3", b"3a", b"abc", b"", b"3.0"])
def test_bad_content_length_rejected(value: bytes) -> None:
    """Signed, hex, spaced or garbage Content-Length values are refused."""
    assert_rejected(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nabc")


@pytest.mark.parametrize("size", [b"0x3", b"+3", b"-3", b"3 ", b"g", b"", b"1" * 20])
def test_bad_chunk_size_rejected(size: bytes) -> None:
    """Chunk sizes that are not plain (and bounded) hex are refused."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\nabc\r\n0\r\n\r\n"
    )


def test_missing_chunk_crlf_rejected() -> None:
    """Chunk data not followed by CRLF is refused."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize(
    "value", [b"identity", b"gzip", b"chunked, identity", b"gzip, chunked", b"xchunked"]
)
def test_other_transfer_encodings_rejected(value: bytes) -> None:
    """Only ``Transfer-Encoding: chunked`` is accepted (identity would let CL frame the body)."""
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
        + value
        + b"\r\nContent-Length: 3\r\n\r\nabc"
    )


def test_te_in_http10_rejected() -> None:
    """Transfer-Encoding in an HTTP/1.0 request is refused."""
    assert_rejected(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_obs_fold_rejected() -> None:
    """A folded header line (leading space or tab) is refused."""
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n")
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n")


def test_space_before_colon_rejected() -> None:
    """A header name followed by whitespace before the colon is refused."""
    assert_rejected(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n")


def test_bare_lf_in_value_rejected() -> None:
    """A bare LF inside a header line is refused."""
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\nX-Smuggle: 1\r\n\r\n")


def test_malformed_request_line_rejected() -> None:
    """A request line that is not METHOD SP target SP HTTP/x.y is refused."""
    assert_rejected(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_rejected(b"GET / HTTP/9\r\nHost: x\r\n\r\n")


def test_long_uri_is_414() -> None:
    """A request line over client_max_header_size gets 414 and the connection closes."""
    out, rec, transport = send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414")
    assert transport.disconnecting and rec.seen == []


def test_long_uri_in_pieces_is_414() -> None:
    """The 414 also fires when the line arrives in pieces without a CRLF yet."""
    channel, transport, rec = connect()
    channel.dataReceived(b"GET /")
    for _ in range(10):
        channel.dataReceived(b"a" * 1000)
    assert transport.value().startswith(b"HTTP/1.1 414")


def test_large_headers_are_431() -> None:
    """Headers summing over client_max_header_size get 431 and the connection closes."""
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    out, rec, transport = send(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    assert transport.disconnecting and rec.seen == []


def test_header_limit_configurable() -> None:
    """The limit is client_max_header_size: a small one refuses what 8k accepts."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 200 + b"\r\n\r\n"
    assert send(request)[0].startswith(b"HTTP/1.1 200")
    assert send(request, max_header_size=128)[0].startswith(b"HTTP/1.1 431")


def test_limit_resets_per_request() -> None:
    """The header budget is per request, not per connection."""
    one = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 3000 + b"\r\n\r\n"
    _, rec, _ = send(one * 4)
    assert len(rec.seen) == 4


def test_nothing_after_rejection_is_parsed() -> None:
    """After a refusal, bytes that follow on the connection are ignored."""
    channel, transport, rec = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n fold\r\n\r\n")
    channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert rec.seen == []
    assert transport.value().count(b"HTTP/1.1") == 1


def test_connection_ids_count_up() -> None:
    """Each connection gets the next serial number ($connection)."""
    site = ProxySite(Recorder())
    a = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    b = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
    a.makeConnection(StringTransport())
    b.makeConnection(StringTransport())
    assert (a.connection_id, b.connection_id) == (1, 2)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- streamed bodies


class PipeRecorder(Resource):
    """Answers when told to; remembers the requests and their body pipes."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        self.requests.append(request)
        return NOT_DONE_YET


class Consumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def streaming(threshold: int = 10) -> tuple[Any, StringTransport, PipeRecorder, Any]:
    from twisted.internet.task import Clock

    from kongtx.clock import Clock as NodeClock

    clock = Clock()
    recorder = PipeRecorder()
    site = ProxySite(recorder, clock=NodeClock(clock), stream_threshold=threshold)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, recorder, clock


def test_large_body_starts_request_before_body_ends() -> None:
    """A body over the threshold: the request is served while its body still arrives."""
    channel, transport, recorder, clock = streaming()
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n0123456789")
    assert recorder.requests == []  # not from inside the channel's header handling
    clock.advance(0)
    (request,) = recorder.requests
    pipe = request.body_pipe
    assert pipe is not None and pipe.declared_length == 30 and not pipe.complete
    consumer = Consumer()
    done = pipe.startProducing(consumer)
    channel.dataReceived(b"abcdefghij")
    assert consumer.data == b"0123456789abcdefghij"
    channel.dataReceived(b"ABCDEFGHIJ")
    assert pipe.complete and done.called
    request.write(b"ok")
    request.finish()
    assert b"Connection: close" not in transport.value()


def test_chunked_body_streams_with_unknown_length() -> None:
    """A chunked body always streams; its length is unknown."""
    channel, _, recorder, clock = streaming(threshold=10**9)
    channel.dataReceived(
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    clock.advance(0)
    pipe = recorder.requests[0].body_pipe
    assert pipe is not None and pipe.declared_length is None
    consumer = Consumer()
    pipe.startProducing(consumer)
    channel.dataReceived(b"0\r\n\r\n")
    assert consumer.data == b"abc" and pipe.complete


def test_small_body_read_whole() -> None:
    """A body under the threshold is read whole first (no pipe)."""
    channel, _, recorder, clock = streaming(threshold=100)
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    (request,) = recorder.requests
    assert request.body_pipe is None and request.content.read() == b"abc"


def test_answer_before_body_end_closes_and_ignores_the_rest() -> None:
    """An early answer says Connection: close; the rest of the body is never parsed as a request."""
    channel, transport, recorder, clock = streaming()
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    clock.advance(0)
    request = recorder.requests[0]
    request.setResponseCode(401)
    request.write(b"no")
    request.finish()
    channel.dataReceived(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 60)
    channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0)
    assert len(recorder.requests) == 1
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 401") and b"Connection: close" in out
    assert transport.disconnecting


def test_pipe_backpressure_pauses_the_client() -> None:
    """A slow upstream pauses reading from the client; draining resumes it."""
    channel, transport, recorder, clock = streaming()
    channel.dataReceived(
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 10
    )
    clock.advance(0)
    pipe = recorder.requests[0].body_pipe
    consumer = Consumer()
    pipe.startProducing(consumer)
    pipe.pauseProducing()  # the upstream socket is full
    for _ in range(5):
        channel.dataReceived(b"b" * 65536)
    assert transport.producerState == "paused"
    pipe.resumeProducing()
    assert transport.producerState == "producing"
    assert len(consumer.data) == 10 + 5 * 65536


def test_client_gone_fails_the_pipe() -> None:
    """A client that disconnects mid-body fails the upstream side of the pipe."""
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    channel, _, recorder, clock = streaming()
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    clock.advance(0)
    pipe = recorder.requests[0].body_pipe
    done = pipe.startProducing(Consumer())
    channel.connectionLost(Failure(ConnectionLost()))
    assert done.called and pipe.failure is not None
    done.addErrback(lambda f: None)
