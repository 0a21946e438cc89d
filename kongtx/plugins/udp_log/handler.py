# -*- test-case-name: tests.unit.test_plugin_udp_log -*-
"""udp-log: one JSON datagram per request, the basic serializer's message (SPEC §4.6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import senders
from kongtx.plugins.log_transports.udp import UdpDestination

__all__ = ["Handler"]


class Handler(BasePlugin):
    """The udp-log plugin's request-time half: a non-blocking datagram in the log phase."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.host = str(config["host"])
        self.port = int(config["port"])
        #: where every datagram of this configuration goes (socket and address found once)
        self.destination: UdpDestination = senders(services).udp.destination(self.host, self.port)

    def log(self, ctx: RequestContext) -> PhaseResult:
        data = basic_json(ctx)
        destination = self.destination
        sock = destination.sock
        if sock is None:
            destination.send(data)  # the first datagram, a host name's, or after a close
            return None
        # UdpDestination.send's usual case, compiled: one send on the connected socket
        try:
            sock.send(data)
        except OSError as e:
            destination.failed(sock, data, e)
            return None
        destination.sender.sent += 1
        return None
