# -*- test-case-name: tests.unit.test_schemas -*-
"""Upstreams and targets (Kong 1.x load balancing): names, targets, healthchecks.

An upstream is a virtual host name an API's upstream_url may use, its targets the
host:port pairs balanced over.  Kong 1.x's rules and messages where it had them;
docs/admin-api.md lists every message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from kongtx.errors import ConflictError
from kongtx.store.schemas.engine import to_number
from kongtx.store.schemas.fields import blank_to_none, created_at_field, id_field
from kongtx.store.schemas.model import (
    CheckContext,
    EntitySchema,
    Errors,
    Field,
    FieldFunc,
    Schema,
    UniqueTogether,
    tags_field,
)

#: A hostname: dot-separated labels of letters, digits and '-' (not at a label's ends).
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
#: Kong's header-name rule for hash_on_header / hash_fallback_header.
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
#: The port a target without one gets (Kong's default).
DEFAULT_TARGET_PORT = 8000
HASH_ON = ("none", "consumer", "ip", "header")
ALGORITHMS = ("round-robin", "consistent-hashing", "least-connections")
_INT_MAX = 2**31


def is_hostname(value: str) -> bool:
    """Whether ``value`` is a DNS name (letters, digits, '-', '.'), not an IPv4 address."""
    if not value or len(value) > 253:
        return False
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if not all(_LABEL_RE.match(label) and len(label) <= 63 for label in labels):
        return False
    # all-numeric labels read as an IPv4 address, not a name (Kong's hostname_type)
    return not all(label.isdigit() for label in labels)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None  # "fe80::1%eth0": an interface of one machine, not a target address
    return address


def split_host_port(value: str) -> tuple[str, int | None, str] | None:
    """``(host, port or None, kind)`` of ``host[:port]`` (kind ``name``/``ipv4``/``ipv6``).

    IPv6 addresses take brackets when they carry a port (``[::1]:80``); a bare
    ``::1`` is an address without one.  ``None`` when it is none of these, or the
    port is not 1..65535.
    """
    port_text: str | None = None
    if value.startswith("["):
        m = re.match(r"^\[([^\]]+)\](?::([0-9]+))?$", value)
        if m is None:
            return None
        host, port_text = m.group(1), m.group(2)
        address = _ip(host)
        if not isinstance(address, ipaddress.IPv6Address):
            return None
        host, kind = address.compressed, "ipv6"
    elif value.count(":") > 1:
        address = _ip(value)
        if not isinstance(address, ipaddress.IPv6Address):
            return None
        host, kind = address.compressed, "ipv6"
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
        address = _ip(host)
        if isinstance(address, ipaddress.IPv4Address):
            kind = "ipv4"
        elif is_hostname(host):
            host, kind = host.lower(), "name"
        else:
            return None
    port: int | None = None
    if port_text is not None:
        # ASCII digits only: str.isdigit() takes "²" (int() fails: a 500) and "٣"
        if not _PORT_RE.match(port_text) or not 1 <= int(port_text) <= 65535:
            return None
        port = int(port_text)
    return host, port, kind


def normalize_target(value: Any) -> str | None:
    """``host:port`` (``[v6]:port``) with the default port added; ``None`` when invalid."""
    if not isinstance(value, str):
        return None
    parsed = split_host_port(value.strip())
    if parsed is None:
        return None
    host, port, kind = parsed
    shown = f"[{host}]" if kind == "ipv6" else host
    return f"{shown}:{DEFAULT_TARGET_PORT if port is None else port}"


def check_upstream_name(value: Any, values: dict[str, Any]) -> str | None:
    """Kong 1.x's upstream name rule: a hostname, no IP address, no port."""
    parsed = split_host_port(value)
    if parsed is None:
        return "Invalid name; must be a valid hostname"
    if parsed[2] != "name":
        return "Invalid name; no ip addresses allowed"
    if parsed[1] is not None:
        return "Invalid name; no port allowed"
    if value.endswith("."):
        return "Invalid name; must be a valid hostname"
    return None


def check_target(value: Any, values: dict[str, Any]) -> str | None:
    """``host[:port]``, stored normalised (port added, IPv6 bracketed, names lower-cased)."""
    normal = normalize_target(value)
    if normal is None:
        return "Invalid target; not a valid hostname or ip address"
    values["target"] = normal
    return None


def _integer_between(low: int, high: int) -> FieldFunc:
    """A check for a ``number`` field holding an integer in ``low..high`` (Kong 1.x wording)."""

    def check(value: Any, values: dict[str, Any]) -> str | None:
        if not isinstance(value, int):
            return "expected an integer"
        if not low <= value <= high:
            return f"value should be between {low} and {high}"
        return None

    return check


def _number_between(low: int, high: int) -> FieldFunc:
    def check(value: Any, values: dict[str, Any]) -> str | None:
        if not low <= value <= high:
            return f"value should be between {low} and {high}"
        return None

    return check


def _check_statuses(value: Any, values: dict[str, Any]) -> str | list[str] | None:
    """A list of HTTP statuses 100..999; form values ("200,302") become integers in place."""
    problems: list[str] = []
    statuses: list[int] = []
    for item in value:
        number = to_number(item)
        if not isinstance(number, int):
            problems.append(f"expected an integer: {item}")
        elif not 100 <= number <= 999:
            problems.append(f"value should be between 100 and 999: {number}")
        else:
            statuses.append(number)
    if problems:
        return problems
    values["http_statuses"] = statuses
    return None


def _statuses(default: list[int]) -> Field:
    return Field(type="array", default=default, func=_check_statuses)


def _count() -> Field:
    return Field(type="number", default=0, func=_integer_between(0, 255))


def _seconds(default: int) -> Field:
    return Field(type="number", default=default, func=_number_between(0, 65535))


#: what a probe's request line may carry: printable ASCII, no space (RFC 3986's characters)
_HTTP_PATH_RE = re.compile(r"^/[!-~]*$")


def _check_http_path(value: Any, values: dict[str, Any]) -> str | None:
    """``active.http_path``: a path (a space or line break would break the probe's request)."""
    if not value.startswith("/"):
        return "should start with: /"
    if not _HTTP_PATH_RE.match(value):
        return (
            f"invalid path: '{value}' (characters outside of the reserved list of RFC 3986 found)"
        )
    return None


_PROBE_TYPES = ("tcp", "http", "https")

_ACTIVE = Schema(
    fields={
        "type": Field(type="string", default="http", enum=_PROBE_TYPES),
        "timeout": _seconds(1),
        "concurrency": Field(type="number", default=10, func=_integer_between(1, _INT_MAX)),
        "http_path": Field(type="string", default="/", func=_check_http_path),
        "healthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "interval": _seconds(0),
                    "http_statuses": _statuses([200, 302]),
                    "successes": _count(),
                }
            ),
        ),
        "unhealthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "interval": _seconds(0),
                    "http_statuses": _statuses([429, 404, 500, 501, 502, 503, 504, 505]),
                    "tcp_failures": _count(),
                    "timeouts": _count(),
                    "http_failures": _count(),
                }
            ),
        ),
    }
)

_PASSIVE = Schema(
    fields={
        "type": Field(type="string", default="http", enum=_PROBE_TYPES),
        "healthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "http_statuses": _statuses(
                        [200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
                        + [300, 301, 302, 303, 304, 305, 306, 307, 308]
                    ),
                    "successes": _count(),
                }
            ),
        ),
        "unhealthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "http_statuses": _statuses([429, 500, 503]),
                    "tcp_failures": _count(),
                    "timeouts": _count(),
                    "http_failures": _count(),
                }
            ),
        ),
    }
)

#: ``healthchecks``: every field optional, deep-merged over these defaults on write.
HEALTHCHECKS = Schema(
    fields={
        "active": Field(type="table", schema=_ACTIVE),
        "passive": Field(type="table", schema=_PASSIVE),
    }
)


def _header_name(field: str) -> FieldFunc:
    """Kong's header-name rule; a blank value clears the field (``hash_on_header=`` in a form)."""

    def check(value: Any, values: dict[str, Any]) -> str | None:
        if blank_to_none(field, value, values):
            return None
        if not _HEADER_NAME_RE.match(value):
            return f"bad header name '{value}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        return None

    return check


def _default_algorithm(values: Mapping[str, Any]) -> str:
    """round-robin, unless a hash was asked for (then consistent-hashing)."""
    return "round-robin" if values.get("hash_on") in (None, "none") else "consistent-hashing"


def _check_upstream(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    """Kong's hash rules (its 0.12 messages): headers named, fallback a different hash."""
    # a field cleared by PATCH null holds its default, "none"
    hash_on, fallback = values.get("hash_on") or "none", values.get("hash_fallback") or "none"
    errors: Errors = {}
    if hash_on == "header" and not values.get("hash_on_header"):
        errors["hash_on_header"] = "hash_on_header is required when hash_on is 'header'"
    if fallback == "header" and not values.get("hash_fallback_header"):
        errors["hash_fallback_header"] = (
            "hash_fallback_header is required when hash_fallback is 'header'"
        )
    if errors:
        return errors
    if hash_on == "none":
        if fallback != "none":
            return {"hash_fallback": "Cannot set fallback if primary 'hash_on' is not set"}
    elif hash_on == fallback and (
        hash_on != "header"
        or str(values["hash_on_header"]).lower() == str(values["hash_fallback_header"]).lower()
    ):
        return {"hash_fallback": "Cannot set fallback and primary hashes to the same value"}
    return None


UPSTREAMS = EntitySchema(
    name="upstreams",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "name": Field(type="string", required=True, unique=True, func=check_upstream_name),
        "hash_on": Field(type="string", default="none", enum=HASH_ON),
        "hash_fallback": Field(type="string", default="none", enum=HASH_ON),
        "hash_on_header": Field(type="string", func=_header_name("hash_on_header")),
        "hash_fallback_header": Field(type="string", func=_header_name("hash_fallback_header")),
        "algorithm": Field(type="string", default=_default_algorithm, enum=ALGORITHMS),
        "slots": Field(type="number", default=10000, func=_integer_between(10, 65536)),
        "healthchecks": Field(type="table", schema=HEALTHCHECKS),
        "tags": tags_field(),
    },
    self_check=_check_upstream,
)


def _target_exists(row: Mapping[str, Any]) -> Exception:
    return ConflictError("target", row.get("target"))


TARGETS = EntitySchema(
    name="targets",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "upstream_id": Field(type="id", required=True, foreign="upstreams:id"),
        "target": Field(type="string", required=True, func=check_target),
        "weight": Field(type="number", default=100, func=_integer_between(0, 1000)),
        "tags": tags_field(),
    },
    unique_together=(
        UniqueTogether(
            ("upstream_id", "target"),
            lambda: ConflictError("target", None),
            error_for_row=_target_exists,
        ),
    ),
)
