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
    #: request-time class from ``kongtx/plugins/<pkg>/handler.py`` when present
    handler: type | None = None
