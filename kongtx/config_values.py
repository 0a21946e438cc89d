# -*- test-case-name: tests.unit.test_config -*-
"""Turning one property's raw kong.conf text into its typed value, with Kong's messages.

Each parser takes (property name, non-empty trimmed raw text) and returns the typed
value or raises :class:`Invalid` whose message is the line the operator sees (SPEC §5.2).
The property table that says which parser reads which property and :class:`~kongtx.config.Config`
live in :mod:`kongtx.config`, which re-exports what other modules import (:class:`Address`,
:func:`format_size`, :func:`twisted_log_level`); loading is :mod:`kongtx.config_loading`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.logger import LogLevel

from kongtx.log import KONG_LEVELS


class Address(NamedTuple):
    """A ``host:port`` pair, as written in ``*_listen`` properties.

    ``host`` never carries IPv6 brackets; ``str()`` adds them back.
    """

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host a local client should dial: a wildcard bind becomes loopback."""
        if self.host == "0.0.0.0":
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host


class Invalid(Exception):
    """One property's value is wrong; the message is the user-facing line."""


Parser = Callable[[str, str], Any]


def string(key: str, raw: str) -> str:
    return raw


def path(key: str, raw: str) -> str:
    return os.path.abspath(os.path.expanduser(raw))


def enum(*allowed: str) -> Parser:
    def parse(key: str, raw: str) -> str:
        if raw not in allowed:
            raise Invalid(f"{key} has an invalid value: '{raw}' ({', '.join(allowed)})")
        return raw

    return parse


def boolean(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("on", "true"):
        return True
    if lowered in ("off", "false"):
        return False
    raise Invalid(f"{key} is not a boolean: '{raw}'")


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def number(key: str, raw: str) -> float:
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise Invalid(f"{key} is not a number: '{raw}'")
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(key: str, raw: str) -> int:
        if re.fullmatch(r"[+-]?\d+", raw):
            result = int(raw)
        else:
            value = number(key, raw)
            if value != int(value):
                raise Invalid(f"{key} is not an integer: '{raw}'")
            result = int(value)
        if minimum is not None and maximum is not None:
            if not minimum <= result <= maximum:
                raise Invalid(f"{key} has an invalid value: '{raw}' ({minimum}-{maximum})")
        elif minimum is not None and result < minimum:
            raise Invalid(f"{key} has an invalid value: '{raw}' (>= {minimum})")
        return result

    return parse


def positive_number(key: str, raw: str) -> float:
    value = number(key, raw)
    if value <= 0:
        raise Invalid(f"{key} has an invalid value: '{raw}' (> 0)")
    return value


_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size(key: str, raw: str) -> int:
    """An nginx size (``512``, ``10k``, ``128m``, ``1g``) in bytes."""
    match = _SIZE.fullmatch(raw)
    if not match:
        raise Invalid(f"{key} is not a size: '{raw}'")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def format_size(size: int) -> str:
    """Bytes back to nginx notation, largest exact unit first (``134217728`` -> ``128m``)."""
    for unit in ("g", "m", "k"):
        factor = _SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def comma_list(key: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def _split_host_port(raw: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"(.+):(\d+)", raw)
    if not match:
        return None
    host, port = match.group(1), int(match.group(2))
    if port > 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return host, port
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME.fullmatch(host):
            return None
    return host, port


def listen(key: str, raw: str) -> Address:
    """``address:port`` (``[v6]:port`` too), Kong's proxy/admin listen form."""
    parsed = _split_host_port(raw)
    if parsed is None:
        raise Invalid(f"{key} must be of form 'address:port'")
    return Address(*parsed)


def listen_or_off(key: str, raw: str) -> Address | None:
    """``off`` (the listener is not started) or ``address:port``, like ``*_listen``."""
    if raw.strip().lower() == "off":
        return None
    return listen(key, raw)


def ipv4_port(key: str, raw: str) -> Address:
    """The gossip addresses: Serf only ever took ``IPv4:port``."""
    match = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):(\d+)", raw)
    if match:
        try:
            ipaddress.IPv4Address(match.group(1))
        except ValueError:
            pass
        else:
            if int(match.group(2)) <= 65535:
                return Address(match.group(1), int(match.group(2)))
    raise Invalid(f"{key} must be in the form of IPv4:port")


def dns_resolver(key: str, raw: str) -> tuple[Address, ...]:
    servers = []
    for item in comma_list(key, raw):
        host, _, port = item.partition(":")
        try:
            ipaddress.IPv4Address(host)
            number = int(port) if port else 53
            if not (port.isdigit() or not port) or not 0 < number <= 65535:
                raise ValueError(port)
        except ValueError:
            raise Invalid(
                f"{key} must be a comma separated list in the form of IPv4 or IPv4:port"
            ) from None
        servers.append(Address(host, number))
    return tuple(servers)


def trusted_ips(key: str, raw: str) -> tuple[str, ...]:
    networks = []
    for item in comma_list(key, raw):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise Invalid(
                f"{key} must be a comma separated list in the form of IPv4 or IPv6 "
                f"address or CIDR block, got '{item}'"
            ) from None
    return tuple(networks)


def data_centers(key: str, raw: str) -> tuple[str, ...]:
    items = comma_list(key, raw)
    for item in items:
        if not re.fullmatch(r"[^:]+:\d+", item):
            raise Invalid(f"{key} has an invalid value: '{item}' (<dc_name>:<replication_factor>)")
    return items


def worker_processes(key: str, raw: str) -> int | str:
    if raw == "auto":
        return raw
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    raise Invalid(f"{key} has an invalid value: '{raw}' (auto, a positive integer)")


def encrypt_key(key: str, raw: str) -> str:
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) not in (16, 24, 32):
        raise Invalid(f"{key} must be a base64 encoded 16, 24 or 32 byte key")
    return raw


def format_value(value: Any, size: bool = False) -> str:
    """The kong.conf spelling of a typed value (``""`` when unset); ``size`` in nginx notation."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if size:
        return format_size(value)
    if isinstance(value, tuple) and not isinstance(value, Address):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def twisted_log_level(level: str) -> LogLevel:
    """Map an nginx log level name to twisted.logger's (``notice`` -> info, ``crit``+ -> critical)."""
    return KONG_LEVELS[level]
