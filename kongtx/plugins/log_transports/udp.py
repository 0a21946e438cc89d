# -*- test-case-name: tests.unit.test_log_transports -*-
"""udp-log, statsd, datadog, loggly: one non-blocking datagram per message."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.plugins.log_transports.common import Counted

__all__ = ["DNS_TTL", "UdpDestination", "UdpSender"]

#: how long a resolved host name is used before resolving it again
DNS_TTL = 60.0
#: IP literal hosts remembered (then forgotten all at once)
MAX_LITERALS = 1024
#: connected sockets kept (one per IP literal destination: a few log configurations);
#: beyond it all are closed at once (their destinations connect again)
MAX_CONNECTED = 256


class _Resolver:
    """Host name -> IP through the reactor (never getaddrinfo on the reactor thread)."""

    def __init__(self, reactor: Any, clock: Clock) -> None:
        self.reactor = reactor
        self.clock = clock
        self._cache: dict[str, tuple[str, float]] = {}
        #: hosts already known to be IP literals (parsed once, not per datagram)
        self._literals: set[str] = set()

    def cached(self, host: str) -> str | None:
        if host in self._literals:
            return host
        found = self._cache.get(host)
        if found is not None:
            return found[0] if found[1] > self.clock.seconds() else None
        return host if self.is_literal(host) else None

    def is_literal(self, host: str) -> bool:
        """Whether ``host`` is an IP address (each parsed once, then remembered)."""
        if host in self._literals:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        if len(self._literals) >= MAX_LITERALS:
            self._literals.clear()  # the hosts of log plugin configurations: few, bounded
        self._literals.add(host)
        return True

    async def resolve(self, host: str) -> str:
        ip = self.cached(host)
        if ip is not None:
            return ip
        ip = str(await self.reactor.resolve(host))
        self._cache[host] = (ip, self.clock.seconds() + DNS_TTL)
        return ip


class UdpSender(Counted):
    """Datagrams to any (host, port) from one non-blocking socket per address family."""

    def __init__(self, resolver: _Resolver) -> None:
        super().__init__()
        self.resolver = resolver
        self._sockets: dict[int, socket.socket] = {}
        #: (ip, port) -> a socket connected to it (what destinations send on)
        self._connected: dict[tuple[str, int], socket.socket] = {}

    def __repr__(self) -> str:
        return "<UdpSender>"

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sockets[family] = sock
        return sock

    def send(self, host: str, port: int, data: bytes) -> None:
        """Send one datagram now (or once the host name is resolved)."""
        ip = self.resolver.cached(host)
        if ip is not None:
            self._send_to(ip, port, data)
            return

        async def later() -> None:
            try:
                resolved = await self.resolver.resolve(host)
            except Exception as e:
                self._drop(f"cannot resolve {host}: {e}")
                return
            self._send_to(resolved, port, data)

        Deferred.fromCoroutine(later())

    def destination(self, host: str, port: int) -> UdpDestination:
        """Where a plugin configuration sends: its datagrams with fewer steps each."""
        return UdpDestination(self, host, int(port))

    def connected(self, ip: str, port: int) -> socket.socket:
        """A non-blocking socket connected to ``(ip, port)`` (shared by the destinations
        of that address): each datagram is one ``send``, without the kernel's route
        lookup and address copy per datagram that ``sendto`` costs.  Connecting a UDP
        socket to an IP address sends nothing and never blocks."""
        sock = self._connected.get((ip, port))
        if sock is not None and sock.fileno() >= 0:
            return sock
        if len(self._connected) >= MAX_CONNECTED:
            self._close_connected()
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((ip, port))
        except OSError:
            sock.close()
            raise
        self._connected[(ip, port)] = sock
        return sock

    def _send_to(self, ip: str, port: int, data: bytes) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            self._socket(family).sendto(data, (ip, int(port)))
        except OSError as e:
            self._drop(f"udp {ip}:{port}: {e}")
            return
        self.sent += 1

    def _close_connected(self) -> None:
        for sock in self._connected.values():
            sock.close()
        self._connected.clear()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._close_connected()


class UdpDestination:
    """One configuration's (host, port): for an IP literal, a socket connected to it is
    found once and each datagram is one ``send`` (as Kong's udp-log: ``setpeername``
    then ``send``); a host name goes through :meth:`UdpSender.send` every time (its
    address is cached for :data:`DNS_TTL`).

    A connected socket reports an earlier datagram's ICMP port unreachable as
    ``ECONNREFUSED`` on a later send: like any send error, a counted, logged drop."""

    __slots__ = ("_is_name", "host", "port", "sender", "sock")

    def __init__(self, sender: UdpSender, host: str, port: int) -> None:
        self.sender = sender
        self.host = host
        self.port = port
        #: a host name (resolved, its address cached for DNS_TTL), not an IP address
        self._is_name = not sender.resolver.is_literal(host)
        #: the socket connected to the address once a datagram went out (udp-log's
        #: compiled handler sends on it itself: see :meth:`failed`)
        self.sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<UdpDestination {self.host}:{self.port}>"

    def send(self, data: bytes) -> None:
        """Send one datagram now (or once the host name is resolved); never raises."""
        sock = self.sock
        if sock is None and self._is_name:
            self.sender.send(self.host, self.port, data)
            return
        try:
            if sock is None:
                sock = self.sock = self.sender.connected(self.host, self.port)
            sock.send(data)
        except OSError as e:
            self.failed(sock, data, e)
            return
        self.sender.sent += 1

    def failed(self, sock: socket.socket | None, data: bytes, error: OSError) -> None:
        """``data`` could not be sent on ``sock``: a counted, logged drop, or, when the
        sender closed its sockets, sent on the sender's socket (the next datagram
        connects a new one)."""
        if sock is not None and sock.fileno() < 0:
            self.sock = None
            self.sender.send(self.host, self.port, data)
            return
        self.sender._drop(f"udp {self.host}:{self.port}: {error}")
