# -*- test-case-name: tests.unit.test_plugin_loggly -*-
"""loggly: the basic serializer's JSON as an RFC 5424 syslog line over UDP (SPEC §4.6).

``<PRI>1 <UTC time> <hostname> kong - - [<key>@41058 tag="t1" tag="t2"] <json>``,
PRI = 8 (facility USER) + severity; the severity rules are syslog's.  ``host``
(default ``logs-01.loggly.com``) and ``port`` (514) are configurable, so tests
point them at a local UDP socket.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import senders
from kongtx.plugins.syslog.handler import priority_for

__all__ = ["Handler"]


class Handler(BasePlugin):
    """The loggly plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.host = str(config.get("host") or "logs-01.loggly.com")
        self.port = int(config.get("port") or 514)
        tags = " ".join(f'tag="{t}"' for t in config.get("tags") or [])
        self.structured = f"[{config['key']}@41058 {tags}]" if tags else f"[{config['key']}@41058]"
        self.hostname = socket.gethostname()
        self.sender = senders(services).udp
        self.clock = senders(services).clock

    def log(self, ctx: RequestContext) -> PhaseResult:
        pri = priority_for(self.config, int(ctx.status or 0))
        if pri is None:
            return None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock.seconds()))
        head = f"<{pri}>1 {stamp} {self.hostname} kong - - {self.structured} "
        self.sender.send(self.host, self.port, head.encode("utf-8") + basic_json(ctx))
        return None
