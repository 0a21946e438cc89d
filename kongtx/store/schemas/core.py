# -*- test-case-name: tests.unit.test_schemas -*-
"""The core entity schemas: apis, consumers, nodes and plugins (SPEC §2.1-2.4).

:func:`core_schemas` gathers them with the upstreams and targets of
:mod:`.upstreams`, keyed by collection name, for the DAO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kongtx.store.schemas.engine import parse_url
from kongtx.store.schemas.fields import blank_to_none, created_at_field, id_field
from kongtx.store.schemas.model import (
    CheckContext,
    EntitySchema,
    Errors,
    Field,
    Schema,
    UniqueTogether,
    tags_field,
)
from kongtx.store.schemas.upstreams import TARGETS, UPSTREAMS

# --------------------------------------------------------------------------- apis (§2.1)

_HOST_RE = re.compile(r"^[0-9A-Za-z._-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-~]*$")
_PATH_CHARS_RE = re.compile(r"^[A-Za-z0-9._~/%-]*$")
_HEX2_RE = re.compile(r"^[0-9A-Fa-f]{2}$")


def check_request_host(value: Any, values: dict[str, Any]) -> str | None:
    """SPEC §2.1 request_host rules (wildcards, labels, characters)."""
    if blank_to_none("request_host", value, values):
        return None
    host = value
    stars = host.count("*")
    if stars > 1:
        return f"Only one wildcard is allowed: {host}"
    if stars == 1:
        if host.startswith("*."):
            rest = host[2:]
        elif host.endswith(".*") and len(host) > 2:
            rest = host[:-2]
        else:
            return f"Invalid wildcard placement: {host}"
        probe = rest
    else:
        probe = host
    if not _HOST_RE.match(probe) or any(
        label == "" or label.endswith("-") for label in probe.split(".")
    ):
        return f"Invalid value: {host}"
    return None


def check_request_path(value: Any, values: dict[str, Any]) -> str | None:
    """SPEC §2.1 request_path rules, in order; strips one trailing slash."""
    if blank_to_none("request_path", value, values):
        return None
    path = value
    if not path.startswith("/"):
        return f"must be prefixed with slash: '{path}'"
    if "//" in path:
        return f"invalid: '{path}'"
    if not _PATH_CHARS_RE.match(path):
        return "must only contain alphanumeric and '., -, _, ~, /, %' characters"
    for i, ch in enumerate(path):
        if ch == "%" and not _HEX2_RE.match(path[i + 1 : i + 3]):
            return f"must use proper encoding; '{path[i : i + 3]}' is invalid"
    if len(path) > 1 and path.endswith("/"):
        values["request_path"] = path[:-1]
    return None


def check_upstream_url(value: Any, values: dict[str, Any]) -> str | None:
    """Only http and https upstreams can be proxied."""
    parsed = parse_url(value)
    if parsed is None or parsed[0] not in ("http", "https"):
        return "Supported protocols are HTTP and HTTPS"
    return None


def check_api_name(value: Any, values: dict[str, Any]) -> str | None:
    """API names end up in URLs and statsd metric names."""
    if not _NAME_RE.match(value):
        return "name must only contain alphanumeric and '., -, _, ~' characters"
    return None


def default_api_name(values: Mapping[str, Any]) -> str | None:
    """request_host, else request_path without its leading '/' and with '/' -> '-' (SPEC §2.1)."""
    host = values.get("request_host")
    path = values.get("request_path")
    if isinstance(host, str) and host:
        name = host
    elif isinstance(path, str) and path:
        stripped = path[:-1] if len(path) > 1 and path.endswith("/") else path
        name = (
            stripped[1:].replace("/", "-")
            if stripped.startswith("/")
            else stripped.replace("/", "-")
        )
    else:
        return None
    return re.sub(r"[^\w.\-~]", "-", name, flags=re.ASCII)


def _check_api(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    host = values.get("request_host") or ""
    path = values.get("request_path") or ""
    if not host.strip() and not path.strip():
        msg = "At least a 'request_host' or a 'request_path' must be specified"
        return {"request_host": msg, "request_path": msg}
    return None


APIS = EntitySchema(
    name="apis",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "name": Field(type="string", unique=True, default=default_api_name, func=check_api_name),
        "request_host": Field(type="string", unique=True, func=check_request_host),
        "request_path": Field(type="string", unique=True, func=check_request_path),
        "strip_request_path": Field(type="boolean", default=False),
        "preserve_host": Field(type="boolean", default=False),
        "upstream_url": Field(type="url", required=True, func=check_upstream_url),
        "tags": tags_field(),
    },
    self_check=_check_api,
)


# --------------------------------------------------------------------------- consumers (§2.2)


def _check_consumer(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    username = values.get("username") or ""
    custom_id = values.get("custom_id") or ""
    if not username.strip() and not custom_id.strip():
        msg = "At least a 'custom_id' or a 'username' must be specified"
        return {"custom_id": msg, "username": msg}
    return None


CONSUMERS = EntitySchema(
    name="consumers",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "custom_id": Field(type="string", unique=True),
        "username": Field(type="string", unique=True),
        "tags": tags_field(),
    },
    self_check=_check_consumer,
)


# --------------------------------------------------------------------------- nodes (§2.4)

NODES = EntitySchema(
    name="nodes",
    primary_key=("name",),
    fields={
        "name": Field(type="string", primary_key=True, required=True),
        "cluster_listening_address": Field(type="string", required=True),
        "created_at": created_at_field(),
    },
)


# --------------------------------------------------------------------------- plugins (§2.3)

#: name -> the plugin's config schema (its ``no_consumer`` set), or None when not loaded
PluginSchemaLookup = Callable[[str], Schema | None]


def plugins_schema(
    lookup: PluginSchemaLookup, exists_error: Callable[[], Exception]
) -> EntitySchema:
    """The ``plugins`` collection, whose ``config`` sub-schema depends on the plugin ``name``.

    ``lookup`` comes from the plugin registry (the store layer knows nothing above
    it); ``exists_error`` builds the 409 raised for a duplicate (name, api_id,
    consumer_id) on insert.
    """

    def config_schema(values: Mapping[str, Any]) -> Schema | str | None:
        name = values.get("name")
        if not isinstance(name, str) or not name:
            return None
        found = lookup(name)
        if found is None:
            return f'Plugin "{name}" not found'
        return found

    def self_check(values: dict[str, Any], ctx: CheckContext) -> str | None:
        found = lookup(values["name"]) if values.get("name") else None
        if values.get("consumer_id") is not None and found is not None and found.no_consumer:
            return "No consumer can be configured for that plugin"
        return None

    return EntitySchema(
        name="plugins",
        put_key=("id", "name"),
        fields={
            "id": id_field(),
            "created_at": created_at_field(),
            "name": Field(type="string", required=True, immutable=True),
            "api_id": Field(type="id", foreign="apis:id"),
            "consumer_id": Field(type="id", foreign="consumers:id"),
            "config": Field(type="table", default={}, schema=config_schema),
            "enabled": Field(type="boolean", default=True),
            "tags": tags_field(),
        },
        self_check=self_check,
        unique_together=(
            UniqueTogether(("name", "api_id", "consumer_id"), exists_error, on_update=False),
        ),
    )


def core_schemas(
    lookup: PluginSchemaLookup, exists_error: Callable[[], Exception]
) -> dict[str, EntitySchema]:
    """apis, consumers, plugins, nodes, upstreams and targets, keyed by collection name."""
    return {
        "apis": APIS,
        "consumers": CONSUMERS,
        "plugins": plugins_schema(lookup, exists_error),
        "nodes": NODES,
        "upstreams": UPSTREAMS,
        "targets": TARGETS,
    }
