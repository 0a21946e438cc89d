# -*- test-case-name: tests.unit.test_plugin_ip_restriction -*-
"""ip-restriction: allow or refuse client addresses by IP or CIDR (SPEC §4.4).

The address checked is ``ctx.client_ip``: the TCP peer, or the X-Forwarded-For
address only when the peer is in ``trusted_ips`` (SPEC's differences table), so
a client cannot pick the address it is judged by.  The lists are parsed once per
configuration; a check is a few integer comparisons.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.ip_restriction.schema import parse_cidr

__all__ = ["Handler"]

NOT_ALLOWED = {"message": "Your IP address is not allowed"}
NO_IP = {"message": "Cannot identify the client IP address, unix domain sockets are not supported."}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Iterable[Any] | None) -> tuple[Network, ...]:
    return tuple(parse_cidr(str(e).strip()) for e in entries or ())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = (text or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


class Handler(BasePlugin):
    """The ip-restriction plugin's request-time half."""

    PRIORITY = 990

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.whitelist = _networks(config.get("whitelist"))
        self.blacklist = _networks(config.get("blacklist"))

    def access(self, ctx: RequestContext) -> PhaseResult:
        ip = _address(ctx.client_ip)
        if ip is None:
            ctx.respond(403, NO_IP)
            return None
        block = False
        if self.blacklist:
            block = _within(ip, self.blacklist)
        if self.whitelist:
            block = not _within(ip, self.whitelist)
        if block:
            ctx.respond(403, NOT_ALLOWED)
        return None
