# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""ip-restriction plugin config (SPEC §4.4): IPs or CIDRs, a whitelist or a blacklist."""

from __future__ import annotations

import ipaddress
from typing import Any

from kongtx.store.schemas import CheckContext, Field, Schema


def parse_cidr(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One entry as a network (a bare address is a /32 or /128); ValueError with a reason."""
    address, slash, prefix = entry.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError("Invalid IP") from None
    if slash:
        if not prefix.isdigit() or int(prefix) > ip.max_prefixlen:
            raise ValueError(f"Invalid prefix: /{prefix}")
        return ipaddress.ip_network(f"{ip}/{int(prefix)}", strict=False)
    return ipaddress.ip_network(ip)


def check_ips(value: Any, values: dict[str, Any]) -> str | None:
    """Every entry must parse; the error names the entry and why."""
    for entry in value:
        try:
            parse_cidr(str(entry))
        except ValueError as e:
            return f"cannot parse '{entry}': {e}"
    return None


def _check(values: dict[str, Any], ctx: CheckContext) -> str | None:
    white, black = values.get("whitelist") or [], values.get("blacklist") or []
    if white and black:
        return "you cannot set both a whitelist and a blacklist"
    if not white and not black:
        return "you must set at least a whitelist or blacklist"
    return None


SCHEMA = Schema(
    fields={
        "whitelist": Field(type="array", func=check_ips),
        "blacklist": Field(type="array", func=check_ips),
    },
    self_check=_check,
)
