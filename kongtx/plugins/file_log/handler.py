# -*- test-case-name: tests.unit.test_plugin_file_log -*-
"""file-log: append the basic serializer's JSON and ``\\n`` to a file (SPEC §4.6).

The descriptor stays open (as Kong kept it per worker) and writes happen on a
thread, batched, so a slow disk never blocks the proxy; past a bounded queue
lines are dropped and counted (:class:`kongtx.plugins.log_transports.FileSender`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import senders

__all__ = ["Handler"]


class Handler(BasePlugin):
    """The file-log plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.sender = senders(services).file(str(config["path"]))

    def log(self, ctx: RequestContext) -> PhaseResult:
        self.sender.send(basic_json(ctx) + b"\n")
        return None
