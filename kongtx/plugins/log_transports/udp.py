# -*- test-case-name: tests.unit.test_log_transports -*-
"""udp-log, statsd, datadog, loggly: one non-blocking datagram per message."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.plugins.log_transports.common import Counted

__all__ = ["DNS_TTL", "UdpSender"]

#: how long a resolved host name is used before resolving it again
DNS_TTL = 60.0
#: IP literal hosts remembered (then forgotten all at once)
MAX_LITERALS = 1024


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
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        if len(self._literals) >= MAX_LITERALS:
            self._literals.clear()  # the hosts of log plugin configurations: few, bounded
        self._literals.add(host)
        return host

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

    def _send_to(self, ip: str, port: int, data: bytes) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            self._socket(family).sendto(data, (ip, int(port)))
        except OSError as e:
            self._drop(f"udp {ip}:{port}: {e}")
            return
        self.sent += 1

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
