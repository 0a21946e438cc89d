"""kongtx.proxy.direct_write: a send at once on plain TCP, the normal path otherwise.

Real sockets on 127.0.0.1 wrapped in a real ``twisted.internet.tcp.Server`` (on a
MemoryReactor, so what the transport registers for writing is visible).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.proxy.direct_write import TurnSender, write_now
from kongtx.reactor import LeanReactor


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket, Any]]:
    """``(ours, peer, peer address)``: a connected pair on 127.0.0.1, ours non-blocking."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname(), timeout=5)
    ours, addr = listener.accept()
    listener.close()
    ours.setblocking(False)
    yield ours, peer, addr
    peer.close()
    ours.close()


@pytest.fixture
def pair(sockets: Any) -> Iterator[tuple[tcp.Server, socket.socket, MemoryReactor]]:
    ours, peer, addr = sockets
    reactor = MemoryReactor()
    proto = Protocol()
    transport = tcp.Server(ours, proto, addr, None, 1, reactor)  # type: ignore[arg-type]
    proto.makeConnection(transport)
    yield transport, peer, reactor


def _recv_exactly(peer: socket.socket, n: int) -> bytes:
    got = b""
    for _ in range(10_000):
        if len(got) >= n:
            break
        chunk = peer.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def _flush(transport: tcp.Server, peer: socket.socket, expected: int) -> bytes:
    """Alternate the reactor's doWrite and the peer's reads until ``expected`` bytes came."""
    peer.setblocking(False)
    got = b""
    deadline = time.monotonic() + 10
    while len(got) < expected and time.monotonic() < deadline:
        if transport.dataBuffer or transport._tempDataLen:
            assert transport.doWrite() is None
        select.select([peer], [], [], 0.01)
        try:
            got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
    return got


def test_sends_at_once_without_registering_for_writing(pair: Any) -> None:
    transport, peer, reactor = pair
    write_now(transport, b"HTTP/1.1 200 OK\r\n\r\nhello")
    # sent by the call itself: nothing buffered, no epoll registration, no reactor turn
    assert transport not in reactor.getWriters()
    assert transport._tempDataLen == 0 and transport.dataBuffer == b""
    assert _recv_exactly(peer, 24) == b"HTTP/1.1 200 OK\r\n\r\nhello"


def test_partial_send_buffers_the_rest_in_order(pair: Any) -> None:
    transport, peer, reactor = pair
    data = bytes(range(256)) * 65536  # 16 MB: more than both socket buffers hold
    write_now(transport, data)
    buffered = transport._tempDataLen
    assert 0 < buffered < len(data)  # the kernel took a part, the transport holds the rest
    assert transport in reactor.getWriters()  # the normal path drains the rest
    write_now(transport, b"tail")  # something is buffered: must not overtake it
    assert transport._tempDataLen == buffered + 4
    assert _flush(transport, peer, len(data) + 4) == data + b"tail"
    assert transport not in reactor.getWriters()


def test_bytes_left_in_the_send_buffer_are_not_overtaken(pair: Any) -> None:
    """After a partial ``doWrite`` the rest sits in ``dataBuffer`` (``_tempDataLen`` 0)."""
    transport, peer, reactor = pair
    data = bytes(range(256)) * 65536
    transport.write(data)
    assert transport.doWrite() is None  # moved into dataBuffer, the kernel took a part
    assert transport._tempDataLen == 0
    assert 0 < transport.offset < len(transport.dataBuffer)
    write_now(transport, b"tail")
    assert transport._tempDataLen == 4  # buffered behind the rest
    assert _flush(transport, peer, len(data) + 4) == data + b"tail"
    assert transport.dataBuffer == b"" and transport.offset == 0  # what write_now relies on
    write_now(transport, b"now")
    assert transport._tempDataLen == 0 and transport.dataBuffer == b""
    assert _recv_exactly(peer, 3) == b"now"


def test_full_socket_buffer_falls_back_to_the_transport(pair: Any) -> None:
    transport, peer, reactor = pair
    big = b"x" * (4 << 20)
    sent = 0
    for _ in range(1000):  # fill the kernel's buffers behind the transport's back
        try:
            sent += transport.socket.send(big)
        except BlockingIOError:
            break
    write_now(transport, b"after")  # EAGAIN: buffered, not lost, not raised
    assert transport._tempDataLen == 5
    assert transport in reactor.getWriters()
    got = _flush(transport, peer, sent + 5)
    assert len(got) == sent + 5 and got.endswith(b"after")


def test_closed_peer_ends_in_connection_lost_not_an_exception(pair: Any) -> None:
    transport, peer, reactor = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # linger 0: a RST, so the next sends fail
    for _ in range(3):
        write_now(transport, b"response bytes")  # never raises
    # the first failed send left the bytes to the normal path, whose doWrite reports the loss
    assert transport._tempDataLen > 0
    assert isinstance(transport.doWrite(), ConnectionLost)


def test_string_transport_takes_the_normal_path() -> None:
    transport = StringTransport()
    write_now(transport, b"abc")
    write_now(transport, b"")
    assert transport.value() == b"abc"


def test_closing_or_tls_transports_take_the_normal_path(pair: Any) -> None:
    transport, peer, reactor = pair
    transport.TLS = True  # startTLS'd: bytes must go through the TLS layer
    calls: list[bytes] = []
    transport.protocol.write = calls.append  # where a TLS transport's write goes
    write_now(transport, b"secret")
    assert calls == [b"secret"]
    transport.TLS = False
    transport.disconnecting = True  # loseConnection called: keep Twisted's ordering
    write_now(transport, b"late")
    assert transport._tempDataLen == 4


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def test_backpressure_still_pauses_a_streaming_producer(pair: Any) -> None:
    transport, peer, reactor = pair
    producer = _Producer()
    transport.registerProducer(producer, True)
    for _ in range(1024):  # up to 64 MB, far more than the kernel buffers
        write_now(transport, b"y" * 65536)
        if producer.paused:
            break
    assert producer.paused == 1  # more than bufferSize held: the producer was told to stop


def _turn_sender() -> tuple[MemoryReactorClock, TurnSender]:
    clock_reactor = MemoryReactorClock()
    return clock_reactor, TurnSender(Clock(clock_reactor))


def test_turn_sender_sends_at_the_end_of_the_turn_in_order(
    pair: tuple[tcp.Server, socket.socket, MemoryReactor],
) -> None:
    """Heads queued in one turn leave together once the turn's timer runs, in order."""
    transport, peer, _ = pair
    clock_reactor, sender = _turn_sender()
    sender.send(transport, b"GET /a HTTP/1.1\r\n\r\n")
    sender.send(transport, b"GET /b HTTP/1.1\r\n\r\n")
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing sent yet
    assert len(clock_reactor.getDelayedCalls()) == 1  # one timer for the turn
    clock_reactor.advance(0)
    peer.setblocking(True)
    assert _recv_exactly(peer, 38) == b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
    assert clock_reactor.getDelayedCalls() == []
    sender.send(transport, b"x")  # a new turn, a new timer
    assert len(clock_reactor.getDelayedCalls()) == 1


def test_turn_sender_on_kongtxs_reactor_uses_its_hook_directly(
    pair: tuple[tcp.Server, socket.socket, MemoryReactor],
) -> None:
    """On kongtx's reactor the sender's flush is the reactor's end-of-turn call itself
    (not queued on the clock): sent once the poll's events are handled, once per turn."""
    transport, peer, _ = pair
    lean = LeanReactor()
    try:
        clock = Clock(lean)
        sender = TurnSender(clock)
        sender.send(transport, b"GET /a HTTP/1.1\r\n\r\n")
        sender.send(transport, b"GET /b HTTP/1.1\r\n\r\n")
        assert clock.pending == 0 and lean.getDelayedCalls() == []
        assert len(lean._turn_end) == 1  # one end-of-turn call for both
        lean.doIteration(0)
        assert lean._turn_end == []
        assert _recv_exactly(peer, 38) == b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        sender.send(transport, b"x")  # a new turn, a new call
        assert len(lean._turn_end) == 1
        lean.runUntilCurrent()
        assert _recv_exactly(peer, 1) == b"x"
    finally:
        lean.removeAll()
        lean._poller.close()


def test_turn_sender_writes_other_transports_at_once() -> None:
    clock_reactor, sender = _turn_sender()
    transport = StringTransport()
    sender.send(transport, b"now")
    assert transport.value() == b"now"
    assert clock_reactor.getDelayedCalls() == []


def test_turn_sender_drops_bytes_for_a_connection_lost_meanwhile(
    pair: tuple[tcp.Server, socket.socket, MemoryReactor],
) -> None:
    transport, peer, _ = pair
    clock_reactor, sender = _turn_sender()
    sender.send(transport, b"late")
    transport.connectionLost(Failure(ConnectionLost()))
    clock_reactor.advance(0)  # no error: the closed transport ignores the write
    assert transport.dataBuffer == b"" and not transport._tempDataBuffer


class _Answering:
    """Stands for the pipeline behind a front-end connection: answers ``ok`` at once."""

    def start(self, incoming: Any, down: Any) -> None:
        down.send_head(200, [("Content-Length", "2")])
        down.write(b"ok")
        down.finish()


def _front_end(ours: socket.socket, addr: Any) -> tuple[Any, tcp.Server, MemoryReactorClock]:
    from kongtx.proxy.fast import FastProxyFactory

    clock_reactor = MemoryReactorClock()
    factory = FastProxyFactory(_Answering(), clock=Clock(clock_reactor), idle_timeout=0)  # type: ignore[arg-type]
    proto = factory.buildProtocol(addr)
    transport = tcp.Server(ours, proto, addr, None, 1, clock_reactor)  # type: ignore[arg-type]
    proto.makeConnection(transport)
    return proto, transport, clock_reactor


def test_front_end_responses_leave_at_the_end_of_the_turn_in_order(sockets: Any) -> None:
    """The fast front-end on plain TCP: a turn's responses leave together, in order."""
    ours, peer, addr = sockets
    proto, transport, clock_reactor = _front_end(ours, addr)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # answered, not sent yet
    assert len(clock_reactor.getDelayedCalls()) == 1  # one timer for the turn
    clock_reactor.advance(0)
    peer.settimeout(5)
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert _recv_exactly(peer, 2 * len(one)) == one + one
    assert transport not in clock_reactor.getWriters()  # sent by one send, nothing buffered


def test_front_end_close_sends_the_queued_response_first(sockets: Any) -> None:
    """``Connection: close``: the queued response is sent before the connection closes."""
    ours, peer, addr = sockets
    proto, transport, clock_reactor = _front_end(ours, addr)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert transport.disconnecting
    peer.settimeout(5)
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    assert _recv_exactly(peer, len(one)) == one  # sent before loseConnection, not at turn end


def test_calls_after_sends_share_the_turn_and_survive_a_failure(pair: Any) -> None:
    """``after_sends``: run once the turn's bytes are sent, on the same timer; one
    call that raises does not keep the others from running."""
    transport, peer, _ = pair
    clock_reactor, sender = _turn_sender()
    ran: list[bytes] = []

    def boom() -> None:
        raise RuntimeError("boom")

    def read_what_was_sent() -> None:
        peer.settimeout(5)
        ran.append(_recv_exactly(peer, 4))

    sender.send(transport, b"head")
    sender.after_sends(boom)
    sender.after_sends(read_what_was_sent)
    assert len(clock_reactor.getDelayedCalls()) == 1
    clock_reactor.advance(0)
    assert ran == [b"head"]
