"""Shared helpers of the log plugins' unit tests: services and recording senders."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from kongtx.clock import Clock
from kongtx.plugins.base import PluginServices
from tests.unit.test_plugin_log_serializer import proxied_context

__all__ = ["RecordingSender", "make_services", "proxied_context"]


def make_services() -> tuple[PluginServices, MemoryReactorClock]:
    """Services on a memory reactor (no sockets are opened by building handlers)."""
    reactor = MemoryReactorClock()
    reactor.advance(1_480_361_263.5)  # 2016-11-28T19:27:43.5Z
    return PluginServices(dao=None, cache=None, clock=Clock(reactor), reactor=reactor), reactor


class RecordingSender:
    """Stands in for a UDP/TCP/file/syslog/HTTP sender; keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        #: as a UdpDestination before its first datagram (udp-log then calls send)
        self.sock = None

    def send(self, *args: Any) -> Any:
        from twisted.internet.defer import succeed

        self.sent.append(args if len(args) > 1 else args[0])
        return succeed(200)

    def request_bytes(self, method: str, body: bytes, headers: Any = None) -> bytes:
        return json.dumps({"method": method, "headers": headers or {}}).encode() + b"\n" + body
