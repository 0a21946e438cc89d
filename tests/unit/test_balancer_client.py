"""The upstream client's balanced mode: connect to the pick, keep the name, pool by address."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.proxy.errors import ConnectError
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream import UpstreamClient, UpstreamResponse


class BalancedClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.client = UpstreamClient(self.reactor, Clock(self.reactor), connect_timeout=1000)
        self.protocols: dict[int, Any] = {}

    def send(self, address: tuple[str, int], url: str = "http://orders.v1/x") -> Deferred[Any]:
        headers = HeaderList([("Host", "orders.v1")])
        return Deferred.fromCoroutine(self.client.request("GET", url, headers, address=address))

    def connect_last(self) -> StringTransport:
        """Complete the newest pending TCP connection with an in-memory transport."""
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 80))
        transport = StringTransport()
        proto.makeConnection(transport)
        self.protocols[id(transport)] = proto
        return transport

    def answer(self, transport: StringTransport) -> None:
        proto = self.protocols[id(transport)]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_connects_to_the_pick_with_the_name_in_host(self) -> None:
        """The TCP connection goes to the pick's IP and port; the request names the upstream."""
        d = self.send(("10.0.0.7", 9001))
        host, port = self.reactor.tcpClients[0][:2]
        assert (host, port) == ("10.0.0.7", 9001)
        transport = self.connect_last()
        head = transport.value().decode()
        assert head.startswith("GET /x HTTP/1.1\r\n") and "Host: orders.v1\r\n" in head
        self.answer(transport)
        response = self.successResultOf(d)
        assert isinstance(response, UpstreamResponse) and response.status == 200

    def test_pool_is_keyed_by_address(self) -> None:
        """A kept-alive connection to one pick is reused for it, never for another pick."""
        d = self.send(("10.0.0.7", 9001))
        transport = self.connect_last()
        self.answer(transport)
        self.successResultOf(d).deliver(_Sink())
        d2 = self.send(("10.0.0.8", 9001))
        assert len(self.reactor.tcpClients) == 2  # another address: a new connection
        self.answer(self.connect_last())
        self.successResultOf(d2).deliver(_Sink())
        transport.clear()
        d3 = self.send(("10.0.0.7", 9001))
        assert len(self.reactor.tcpClients) == 2  # the first pick's connection reused
        assert transport.value().startswith(b"GET /x HTTP/1.1")
        self.answer(transport)
        self.successResultOf(d3)

    def test_endpoints_by_address_family_and_tls_name(self) -> None:
        """IPv4/IPv6 picks get plain TCP endpoints (no name resolution); HTTPS keeps the SNI name."""
        v4 = self.client._endpoint(("http", "10.0.0.7", 80, "orders.v1"))
        v6 = self.client._endpoint(("http", "::1", 80, "orders.v1"))
        assert isinstance(v4, TCP4ClientEndpoint) and isinstance(v6, TCP6ClientEndpoint)
        tls: Any = self.client._endpoint(("https", "10.0.0.7", 443, "orders.v1"))
        assert isinstance(tls._wrappedEndpoint, TCP4ClientEndpoint)
        creators = [c.cell_contents for c in tls._wrapperFactory.__closure__ or ()]
        assert [getattr(c, "_sni", None) for c in creators if hasattr(c, "_sni")] == [b"orders.v1"]

    def test_connect_failure_is_a_connect_error(self) -> None:
        """A refused pick raises ConnectError (nothing was sent): the pipeline may retry."""
        d = self.send(("10.0.0.9", 1))
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        connector: Any = self.reactor.connectors[0]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        err = self.failureResultOf(d, ConnectError)
        assert err.value.status == 502

    def test_client_gone_while_connecting_is_a_cancel_not_a_connect_error(self) -> None:
        """The client leaving during the connect cancels it: CancelledError, not ConnectError
        (which the pipeline would count as the pick's TCP failure and retry for nobody)."""
        d = self.send(("10.0.0.9", 1))
        assert len(self.reactor.tcpClients) == 1
        d.cancel()
        self.failureResultOf(d, CancelledError)


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass

    def fail(self, reason: Failure) -> None:
        pass
