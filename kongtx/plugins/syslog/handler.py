# -*- test-case-name: tests.unit.test_plugin_syslog -*-
"""syslog: the basic serializer's JSON to the local syslog, ident ``kong``, facility USER (SPEC §4.6).

The severity depends on the status (< 400 ``successful_severity``, 4xx
``client_errors_severity``, >= 500 ``server_errors_severity``); a message is sent
only when that severity is at least as urgent as ``log_level``.

Why a socket and not :func:`syslog.syslog`: the C call blocks the reactor when
the syslog daemon is slow; a non-blocking datagram is dropped (and counted)
instead.  The socket is ``/dev/log``, or ``KONGTX_SYSLOG_SOCKET`` when set (tests,
containers whose syslog listens elsewhere).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import senders

__all__ = ["FACILITY_USER", "LEVELS", "Handler", "priority_for", "severity_for", "socket_path"]

#: syslog severities by name (RFC 5424): lower is more urgent
LEVELS: Mapping[str, int] = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
FACILITY_USER = 1

DEFAULT_SOCKET = "/dev/log"


def socket_path() -> str:
    """Where the local syslog listens."""
    return os.environ.get("KONGTX_SYSLOG_SOCKET") or DEFAULT_SOCKET


def severity_for(config: Mapping[str, Any], status: int) -> str:
    """The configured severity of a response status."""
    if status >= 500:
        return str(config.get("server_errors_severity") or "info")
    if status >= 400:
        return str(config.get("client_errors_severity") or "info")
    return str(config.get("successful_severity") or "info")


def should_send(config: Mapping[str, Any], severity: str) -> bool:
    """Only messages at least as urgent as ``log_level`` go out."""
    return LEVELS[severity] <= LEVELS[str(config.get("log_level") or "info")]


def priority_for(config: Mapping[str, Any], status: int) -> int | None:
    """The syslog PRI (user facility) of a response's message, or None when ``log_level`` filters it."""
    severity = severity_for(config, status)
    if not should_send(config, severity):
        return None
    return FACILITY_USER * 8 + LEVELS[severity]


class Handler(BasePlugin):
    """The syslog plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.sender = senders(services).syslog(socket_path())
        self.clock = senders(services).clock

    def log(self, ctx: RequestContext) -> PhaseResult:
        pri = priority_for(self.config, int(ctx.status or 0))
        if pri is None:
            return None
        stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(self.clock.seconds()))
        # RFC 3164 pads a one-digit day with a space
        if stamp[4] == "0":
            stamp = stamp[:4] + " " + stamp[5:]
        head = f"<{pri}>{stamp} kong: ".encode("ascii")
        self.sender.send(head + basic_json(ctx))
        return None
