# -*- test-case-name: tests.unit.test_log_transports -*-
"""The node's senders, one per destination, shared by every logging handler."""

from __future__ import annotations

import weakref
from typing import Any

from kongtx.clock import Clock
from kongtx.plugins.log_transports.file import FileSender
from kongtx.plugins.log_transports.http import HttpSender
from kongtx.plugins.log_transports.syslog import SyslogSender
from kongtx.plugins.log_transports.tcp import TcpSender
from kongtx.plugins.log_transports.udp import UdpSender, _Resolver

__all__ = ["Senders", "senders"]


class Senders:
    """The node's senders, one per destination, reused by every handler."""

    def __init__(self, reactor: Any, clock: Clock) -> None:
        self.reactor = reactor
        self.clock = clock
        self.resolver = _Resolver(reactor, clock)
        self.udp = UdpSender(self.resolver)
        self._tcp: dict[tuple[str, int], TcpSender] = {}
        self._http: dict[tuple[str, bool], HttpSender] = {}
        self._files: dict[str, FileSender] = {}
        self._syslog: dict[str, SyslogSender] = {}

    def tcp(self, host: str, port: int, timeout: float, keepalive: float) -> TcpSender:
        key = (host, port)
        sender = self._tcp.get(key)
        if sender is None:
            sender = self._tcp[key] = TcpSender(
                self.reactor, self.clock, host, port, timeout, keepalive
            )
        sender.timeout, sender.keepalive = timeout, keepalive
        return sender

    def http(self, url: str, timeout: float, keepalive: float, verify: bool = False) -> HttpSender:
        key = (url, verify)
        sender = self._http.get(key)
        if sender is None:
            sender = self._http[key] = HttpSender(
                self.reactor, self.clock, url, timeout, keepalive, verify=verify
            )
        sender.timeout, sender.keepalive = timeout, keepalive
        return sender

    def file(self, path: str) -> FileSender:
        sender = self._files.get(path)
        if sender is None:
            sender = self._files[path] = FileSender(self.reactor, path)
        return sender

    def syslog(self, path: str) -> SyslogSender:
        sender = self._syslog.get(path)
        if sender is None:
            sender = self._syslog[path] = SyslogSender(path)
        return sender

    def close(self) -> None:
        """Close every socket and file (tests; a stopping node)."""
        self.udp.close()
        for group in (self._tcp, self._http, self._files, self._syslog):
            for sender in group.values():
                sender.close()
            group.clear()


_SENDERS: weakref.WeakKeyDictionary[Clock, Senders] = weakref.WeakKeyDictionary()


def senders(services: Any) -> Senders:
    """The node's :class:`Senders` (one per node Clock).

    Raises ``ValueError`` without services: a log plugin needs the node's clock
    and reactor (the runtime always passes them).
    """
    if services is None:
        raise ValueError("logging plugins need the node's services (clock, reactor)")
    clock: Clock = services.clock
    found = _SENDERS.get(clock)
    if found is None:
        reactor = services.reactor if services.reactor is not None else clock.reactor
        found = _SENDERS[clock] = Senders(reactor, clock)
    return found
