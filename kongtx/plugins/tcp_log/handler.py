# -*- test-case-name: tests.unit.test_plugin_tcp_log -*-
"""tcp-log: the basic serializer's JSON plus ``\\r\\n`` on a pooled TCP connection (SPEC §4.6).

The connection is kept for ``keepalive`` ms after the last message and shared
by every API logging to the same receiver; ``timeout`` bounds the connect.  A
receiver that is slow or down fills a bounded queue, then messages are dropped
and counted (:class:`kongtx.plugins.log_transports.TcpSender`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import senders

__all__ = ["Handler"]


class Handler(BasePlugin):
    """The tcp-log plugin's request-time half."""

    PRIORITY = 0

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.sender = senders(services).tcp(
            str(config["host"]),
            int(config["port"]),
            float(config.get("timeout", 10000)) / 1000.0,
            float(config.get("keepalive", 60000)) / 1000.0,
        )

    def log(self, ctx: RequestContext) -> PhaseResult:
        self.sender.send(basic_json(ctx) + b"\r\n")
        return None
