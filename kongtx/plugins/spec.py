# -*- test-case-name: tests.unit.test_registry -*-
"""What kongtx knows about a plugin before any request runs.

A :class:`PluginSpec` is the static half of a plugin (name, priority, config
schema, owned collections and their Admin routes); the request-time half is its
``handler`` class.  Keeping them apart lets the Admin API and the DAO load every
plugin's schema without importing request-time code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kongtx.store.schemas import EntitySchema, Schema


@dataclass(frozen=True)
class CredentialRoute:
    """A consumer-scoped Admin route a plugin provides (SPEC §1.6)."""

    #: path segment under ``/consumers/{c}/``: "key-auth", "basic-auth", "acls"...
    path: str
    #: the collection the route lists and writes: "keyauth_credentials"...
    collection: str
    #: the column a non-uuid item segment is looked up by: "key", "username"...
    natural_key: str


@dataclass(frozen=True, eq=False)
class PluginSpec:
    """One plugin's name, priority (SPEC §4.1), config schema and owned collections."""

    name: str
    priority: int
    config_schema: Schema
    no_consumer: bool = False
    entities: Mapping[str, EntitySchema] = field(default_factory=dict)
    routes: tuple[CredentialRoute, ...] = ()
    #: request-time class from ``kongtx/plugins/<pkg>/handler.py`` when present; a
    #: bundled plugin's is imported when a chain first needs it (:meth:`load_handler`)
    handler: type | None = None
    #: the plugin package whose ``handler`` module :meth:`load_handler` imports
    handler_package: str | None = None

    @property
    def has_handler(self) -> bool:
        """Whether the plugin has a request-time half (loaded or not yet)."""
        return self.handler is not None or self.handler_package is not None

    def load_handler(self) -> type | None:
        """The handler class, importing its module on first use.

        Bundled plugins' handlers (and what they import: PyJWT, the LDAP client...)
        are imported by the first API whose chain has the plugin, not by every
        process that loads the registry (issue 8: memory per worker).
        """
        if self.handler is None and self.handler_package is not None:
            from kongtx.plugins.registry import import_handler

            object.__setattr__(self, "handler", import_handler(self.handler_package, self.name))
        return self.handler
