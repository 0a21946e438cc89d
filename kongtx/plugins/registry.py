# -*- test-case-name: tests.unit.test_registry -*-
"""Which plugins this node knows: the bundled ones plus ``custom_plugins`` (SPEC §5.2).

Why a registry object rather than module globals: the set of plugins is part of
a node's configuration (``custom_plugins``), and tests build registries with
plugins of their own.  The registry is built once at start and never changes.

A plugin is a Python package exposing ``SPEC: PluginSpec``; its request-time
class is ``<package>.handler.Handler`` when that module exists.  Schemas (Admin
API, DAO) never depend on the handler.  A custom plugin's handler is imported
when the registry loads (a broken one fails the start); a bundled plugin's is
only located then, and imported by the first chain that has the plugin
(:meth:`~kongtx.plugins.spec.PluginSpec.load_handler`): a worker does not hold
the request-time code, and what it imports, of plugins no API uses.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Iterable, Sequence

from kongtx.plugins.spec import CredentialRoute, PluginSpec
from kongtx.store.schemas import EntitySchema

#: bundled plugin packages under ``kongtx.plugins``, by plugin name
BUNDLED: dict[str, str] = {
    "ssl": "ssl",
    "bot-detection": "bot_detection",
    "cors": "cors",
    "key-auth": "key_auth",
    "basic-auth": "basic_auth",
    "jwt": "jwt",
    "oauth2": "oauth2",
    "ldap-auth": "ldap_auth",
    "hmac-auth": "hmac_auth",
    "ip-restriction": "ip_restriction",
    "acl": "acl",
    "request-size-limiting": "request_size_limiting",
    "rate-limiting": "rate_limiting",
    "response-ratelimiting": "response_ratelimiting",
    "request-transformer": "request_transformer",
    "response-transformer": "response_transformer",
    "udp-log": "udp_log",
    "http-log": "http_log",
    "file-log": "file_log",
    "syslog": "syslog",
    "loggly": "loggly",
    "statsd": "statsd",
    "datadog": "datadog",
    "runscope": "runscope",
    "tcp-log": "tcp_log",
    "galileo": "galileo",
    "correlation-id": "correlation_id",
}


class PluginLoadError(Exception):
    """A plugin (bundled or custom) could not be loaded; the message names it and why."""


def import_handler(module: str, plugin: str) -> type | None:
    """``<module>.handler.Handler``, or None when the plugin has no handler module."""
    name = f"{module}.handler"
    try:
        handler_module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise PluginLoadError(f"plugin {plugin!r}: cannot import {name}: {e}") from e
    except Exception as e:
        raise PluginLoadError(f"plugin {plugin!r}: cannot import {name}: {e}") from e
    handler = getattr(handler_module, "Handler", None)
    if not isinstance(handler, type):
        raise PluginLoadError(f"plugin {plugin!r}: {name} defines no Handler class")
    return handler


def load_spec(module: str, lazy_handler: bool = False) -> PluginSpec:
    """Import ``module`` and return its ``SPEC`` with the handler attached.

    ``lazy_handler`` (bundled plugins): the handler module is only located here
    and imported by :meth:`PluginSpec.load_handler` when a chain first needs it.
    """
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        raise PluginLoadError(f"plugin {module!r}: cannot import {module}: {e}") from e
    spec = getattr(mod, "SPEC", None)
    if not isinstance(spec, PluginSpec):
        raise PluginLoadError(f"plugin {module!r}: {module} exposes no SPEC: PluginSpec")
    if spec.handler is None and lazy_handler:
        if importlib.util.find_spec(f"{module}.handler") is not None:
            spec = dataclasses.replace(spec, handler_package=module)
    elif spec.handler is None:
        handler = import_handler(module, spec.name)
        if handler is not None:
            spec = dataclasses.replace(spec, handler=handler)
    if spec.no_consumer != spec.config_schema.no_consumer:
        # one source of truth for the DAO's "No consumer can be configured" check
        spec = dataclasses.replace(
            spec,
            config_schema=dataclasses.replace(spec.config_schema, no_consumer=spec.no_consumer),
        )
    return spec


class PluginRegistry:
    """The plugins a node has loaded, by name."""

    def __init__(self, specs: Iterable[PluginSpec]) -> None:
        self._specs: dict[str, PluginSpec] = {}
        collections: dict[str, str] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise PluginLoadError(f"plugin {spec.name!r} is loaded twice")
            for collection in spec.entities:
                if collection in collections:
                    raise PluginLoadError(
                        f"plugin {spec.name!r}: collection {collection!r} already belongs"
                        f" to plugin {collections[collection]!r}"
                    )
                collections[collection] = spec.name
            self._specs[spec.name] = spec

    @classmethod
    def load(cls, custom_plugins: Sequence[str] = ()) -> PluginRegistry:
        """Every bundled plugin plus each ``custom_plugins`` module path."""
        specs = [load_spec(f"kongtx.plugins.{pkg}", lazy_handler=True) for pkg in BUNDLED.values()]
        for module in custom_plugins:
            module = module.strip()
            if module:
                specs.append(load_spec(module))
        return cls(specs)

    def get(self, name: str) -> PluginSpec | None:
        """The plugin called ``name``, or None when it is not loaded on this node."""
        return self._specs.get(name)

    def names(self) -> list[str]:
        """Every loaded plugin name, sorted."""
        return sorted(self._specs)

    def specs(self) -> list[PluginSpec]:
        """Every loaded plugin, highest priority first (SPEC §4.1), ties by name."""
        return sorted(self._specs.values(), key=lambda s: (-s.priority, s.name))

    def entity_schemas(self) -> dict[str, EntitySchema]:
        """Every plugin-owned collection, by name."""
        out: dict[str, EntitySchema] = {}
        for spec in self.specs():
            out.update(spec.entities)
        return out

    def credential_routes(self) -> list[CredentialRoute]:
        """Every consumer-scoped Admin route the plugins provide (SPEC §1.6)."""
        return [route for spec in self.specs() for route in spec.routes]
