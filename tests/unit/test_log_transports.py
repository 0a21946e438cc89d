"""Log senders: bounded queues, pooled connections, no blocking (SPEC §4.6)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.plugins.log_transports import (
    FileSender,
    HttpSender,
    LogDropped,
    Senders,
    TcpSender,
    UdpSender,
)
from kongtx.plugins.log_transports.http import _HttpConnection
from kongtx.plugins.log_transports.tcp import _TcpConnection
from kongtx.plugins.log_transports.udp import _Resolver


class FakeSocket:
    def __init__(self, error: OSError | None = None) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.error = error
        self.closed = False

    def sendto(self, data: bytes, address: Any) -> int:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))
        return len(data)

    def send(self, data: bytes) -> int:
        """A connected socket's send: recorded with the address ``None``."""
        return self.sendto(data, None)

    def fileno(self) -> int:
        return -1 if self.closed else 5

    def close(self) -> None:
        self.closed = True


def connect_tcp(
    reactor: MemoryReactorClock, index: int = -1
) -> tuple[_TcpConnection, StringTransport]:
    """Complete the last connectTCP the sender made, returning its protocol and transport."""
    _, _, factory, _, _ = reactor.tcpClients[index]
    wrapper = factory.buildProtocol(None)
    transport = StringTransport()
    wrapper.makeConnection(transport)
    return wrapper._wrappedProtocol, transport


class UdpTests(SynchronousTestCase):
    def test_ip_literals_sent_at_once_and_errors_counted(self) -> None:
        """A datagram to an IP goes out at once; a send error is a counted drop, never raised."""
        reactor = MemoryReactorClock()
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))
        sock = FakeSocket()
        sender._sockets[2] = sock  # type: ignore[assignment]
        sender.send("127.0.0.1", 9999, b"hello")
        self.assertEqual(sock.sent, [(b"hello", ("127.0.0.1", 9999))])
        sock.error = BlockingIOError(11, "would block")
        sender.send("127.0.0.1", 9999, b"again")
        self.assertEqual((sender.sent, sender.dropped), (1, 1))

    def test_destination_of_an_ip_literal(self) -> None:
        """A destination sends each datagram with one send on a socket connected to its
        address (shared by the destinations of one address); errors are counted drops."""
        reactor = MemoryReactorClock()
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))
        v4, v6 = FakeSocket(), FakeSocket()
        sender._connected.update({("127.0.0.1", 9999): v4, ("::1", 514): v6})  # type: ignore[dict-item]
        four = sender.destination("127.0.0.1", 9999)
        six = sender.destination("::1", 514)
        four.send(b"a")
        sender.destination("127.0.0.1", 9999).send(b"b")
        six.send(b"c")
        self.assertEqual(v4.sent, [(b"a", None), (b"b", None)])
        self.assertEqual(v6.sent, [(b"c", None)])
        v4.error = BlockingIOError(11, "would block")
        four.send(b"d")
        self.assertEqual((sender.sent, sender.dropped), (3, 1))

    def test_destination_after_close_connects_again(self) -> None:
        """Once the sender closed its sockets, a destination's next datagram goes out on
        the sender's socket, and the one after on a new connected socket."""
        reactor = MemoryReactorClock()
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))
        old, plain, new = FakeSocket(), FakeSocket(), FakeSocket()
        sender._connected[("127.0.0.1", 9999)] = old  # type: ignore[assignment]
        dest = sender.destination("127.0.0.1", 9999)
        dest.send(b"a")
        sender.close()
        sender._sockets[2] = plain  # type: ignore[assignment]
        dest.send(b"b")
        sender._connected[("127.0.0.1", 9999)] = new  # type: ignore[assignment]
        dest.send(b"c")
        self.assertEqual(old.sent, [(b"a", None)])
        self.assertEqual(plain.sent, [(b"b", ("127.0.0.1", 9999))])
        self.assertEqual(new.sent, [(b"c", None)])
        self.assertEqual((sender.sent, sender.dropped), (3, 0))

    def test_destination_socket_failure_is_a_drop(self) -> None:
        """A socket that cannot be made (no IPv6) is a counted drop, never raised."""
        reactor = MemoryReactorClock()
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))

        def no_socket(ip: str, port: int) -> Any:
            raise OSError(97, "Address family not supported by protocol")

        sender.connected = no_socket  # type: ignore[method-assign]
        sender.destination("::1", 514).send(b"a")
        self.assertEqual((sender.sent, sender.dropped), (0, 1))

    def test_connected_socket_real_datagrams_and_a_closed_port(self) -> None:
        """Real sockets on 127.0.0.1: datagrams arrive; to a closed port, the ICMP port
        unreachable comes back as ECONNREFUSED on a later send: a counted, logged drop,
        never raised, and later datagrams still go out once the port listens again."""
        reactor = MemoryReactorClock()
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))
        self.addCleanup(sender.close)
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        port = receiver.getsockname()[1]
        dest = sender.destination("127.0.0.1", port)
        dest.send(b"one")
        dest.send(b"two")
        self.assertEqual([receiver.recv(100), receiver.recv(100)], [b"one", b"two"])
        self.assertEqual(sender.sent, 2)
        self.assertIs(sender.connected("127.0.0.1", port), dest.sock)

        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        lost = sender.destination("127.0.0.1", closed_port)
        for _ in range(20):  # bounded: the ICMP error arrives within a few sends
            lost.send(b"x" * 10)
            if sender.dropped:
                break
            time.sleep(0.01)
        self.assertEqual(sender.dropped, 1)
        dest.send(b"three")
        self.assertEqual(receiver.recv(100), b"three")

    def test_destination_of_a_host_name_resolves(self) -> None:
        """A host name is resolved through the reactor (cached for DNS_TTL), never by the socket."""
        reactor = MemoryReactorClock()
        resolved: list[str] = []

        def resolve(host: str) -> Deferred[str]:
            resolved.append(host)
            return succeed("127.0.0.2")

        reactor.resolve = resolve  # type: ignore[method-assign,assignment]
        sender = UdpSender(_Resolver(reactor, Clock(reactor)))
        sock = FakeSocket()
        sender._sockets[2] = sock  # type: ignore[assignment]
        dest = sender.destination("logs.example", 9999)
        dest.send(b"a")
        dest.send(b"b")
        self.assertEqual(sock.sent, [(b"a", ("127.0.0.2", 9999)), (b"b", ("127.0.0.2", 9999))])
        self.assertEqual(resolved, ["logs.example"])


class TcpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sender = TcpSender(
            self.reactor, Clock(self.reactor), "127.0.0.1", 7777, 10, 60, max_queue=3
        )

    def test_queue_until_connected_then_flush_in_order(self) -> None:
        """Messages wait while connecting, then go out in order on one connection."""
        self.sender.send(b"a")
        self.sender.send(b"b")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        _, transport = connect_tcp(self.reactor)
        self.assertEqual(transport.value(), b"ab")
        self.sender.send(b"c")
        self.assertEqual(transport.value(), b"abc")
        self.assertEqual(self.sender.sent, 3)

    def test_bounded_queue_drops_and_counts(self) -> None:
        """A receiver that never connects fills the queue; further messages are dropped and counted."""
        for i in range(5):
            self.sender.send(b"%d" % i)
        self.assertEqual(list(self.sender.queue), [b"0", b"1", b"2"])
        self.assertEqual(self.sender.dropped, 2)

    def test_paused_socket_queues(self) -> None:
        """While the socket's buffer is full (producer paused) messages queue; resume flushes them."""
        self.sender.send(b"a")
        proto, transport = connect_tcp(self.reactor)
        proto.pauseProducing()
        self.sender.send(b"b")
        self.assertEqual(transport.value(), b"a")
        proto.resumeProducing()
        self.assertEqual(transport.value(), b"ab")

    def test_idle_connection_closed_after_keepalive(self) -> None:
        """An idle connection is closed after keepalive seconds."""
        self.sender.send(b"a")
        _, transport = connect_tcp(self.reactor)
        self.reactor.advance(59)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_failed_connect_retries_later(self) -> None:
        """A refused connection is retried after a pause while messages wait."""
        self.sender.send(b"a")
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(1.1)
        self.assertEqual(len(self.reactor.tcpClients), 2)


class HttpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sender = HttpSender(
            self.reactor,
            Clock(self.reactor),
            "http://logs.example:8080/in?x=1",
            5,
            60,
            connections=1,
            max_queue=2,
        )

    def test_request_bytes_are_kongs(self) -> None:
        """The hand-written request has Host, Connection, Content-Type and Content-Length."""
        self.assertEqual(
            self.sender.request_bytes("PUT", b'{"a":1}', {"Authorization": "Bearer t"}),
            b"PUT /in?x=1 HTTP/1.1\r\nHost: logs.example\r\nConnection: Keep-Alive\r\n"
            b"Content-Type: application/json\r\nContent-Length: 7\r\n"
            b'Authorization: Bearer t\r\n\r\n{"a":1}',
        )

    def test_one_request_at_a_time_on_a_kept_connection(self) -> None:
        """The second request waits for the first response and reuses its connection."""
        d1 = self.sender.send(b"REQ1")
        d2 = self.sender.send(b"REQ2")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        proto, transport = connect_tcp(self.reactor)
        self.assertEqual(transport.value(), b"REQ1")
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.successResultOf(d1), 200)
        self.assertEqual(transport.value(), b"REQ1REQ2")
        proto.dataReceived(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d2), 500)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_queue_bound_and_timeout(self) -> None:
        """Beyond max_queue sends fail at once; a request without an answer times out and is dropped."""
        d1 = self.sender.send(b"1")
        d2 = self.sender.send(b"2")
        d3 = self.sender.send(b"3")
        self.failureResultOf(self.sender.send(b"4"), LogDropped)
        connect_tcp(self.reactor)
        self.reactor.advance(5.1)
        self.failureResultOf(d1, LogDropped)
        self.assertNoResult(d2)
        self.assertEqual(self.sender.dropped, 2)
        del d3

    def test_connection_close_response(self) -> None:
        """A response with Connection: close is not reused."""
        d = self.sender.send(b"R")
        proto, _ = connect_tcp(self.reactor)
        self.assertIsInstance(proto, _HttpConnection)
        proto.dataReceived(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        self.assertEqual(self.successResultOf(d), 204)
        self.assertEqual(self.sender._idle, [])


class FileTests(SynchronousTestCase):
    def test_lines_appended_with_fd_kept(self) -> None:
        """Lines are appended in order; the descriptor stays open between writes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "log.json")
            sender = FileSender(MemoryReactorClock(), path)
            sender.send(b"one\n")
            fd = sender._fd
            sender.send(b"two\n")
            self.assertEqual(sender._fd, fd)
            sender.close()
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"one\ntwo\n")
            self.assertEqual(sender.sent, 2)

    def test_unwritable_path_counts_drops(self) -> None:
        """A path that cannot be opened drops (and counts) the lines, never raises."""
        sender = FileSender(MemoryReactorClock(), "/nonexistent-dir/x/log")
        sender.send(b"x\n")
        self.assertEqual(sender.dropped, 1)


class RegistryTests(SynchronousTestCase):
    def test_senders_are_shared_per_destination(self) -> None:
        """Handlers logging to the same destination share one sender."""
        reactor = MemoryReactorClock()
        s = Senders(reactor, Clock(reactor))
        self.assertIs(s.tcp("h", 1, 1, 1), s.tcp("h", 1, 2, 2))
        self.assertIsNot(s.tcp("h", 1, 1, 1), s.tcp("h", 2, 1, 1))
        self.assertIs(s.http("http://a/x", 1, 1), s.http("http://a/x", 1, 1))
        self.assertIs(s.file("/tmp/a"), s.file("/tmp/a"))
        s.close()
