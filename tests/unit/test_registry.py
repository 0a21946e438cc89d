"""The plugin registry: bundled plugins, custom_plugins, priorities, entities, routes."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.registry import BUNDLED, PluginLoadError, PluginRegistry, load_spec
from kongtx.plugins.spec import CredentialRoute, PluginSpec
from kongtx.store.schemas import EntitySchema, Field, Schema
from kongtx.store.tables import OWNERS, TABLES

PRIORITIES = {
    "ssl": 3000,
    "bot-detection": 2500,
    "cors": 2000,
    "key-auth": 1000,
    "basic-auth": 1000,
    "jwt": 1000,
    "oauth2": 1000,
    "ldap-auth": 1000,
    "hmac-auth": 999,
    "ip-restriction": 990,
    "acl": 950,
    "request-size-limiting": 950,
    "rate-limiting": 900,
    "response-ratelimiting": 900,
    "request-transformer": 800,
    "response-transformer": 800,
    "udp-log": 1,
    "http-log": 1,
    "file-log": 1,
    "syslog": 1,
    "loggly": 1,
    "statsd": 1,
    "datadog": 1,
    "runscope": 1,
    "tcp-log": 0,
    "galileo": 0,
    "correlation-id": 0,
}


@contextmanager
def fake_modules(**modules: types.ModuleType) -> Iterator[None]:
    """Make ``modules`` importable for the duration of a test (no files, no sys.path)."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def module(name: str, package: bool = False, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    if package:
        mod.__path__ = []
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def custom_spec(name: str = "my-plugin", **kw: Any) -> PluginSpec:
    return PluginSpec(
        name=name, priority=kw.pop("priority", 5), config_schema=Schema(fields={}), **kw
    )


class BundledTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = PluginRegistry.load()

    def test_every_bundled_plugin_with_its_priority(self) -> None:
        """All 27 bundled plugins load with SPEC §4.1's priorities."""
        self.assertEqual(self.registry.names(), sorted(PRIORITIES))
        self.assertEqual(set(BUNDLED), set(PRIORITIES))
        for name, priority in PRIORITIES.items():
            spec = self.registry.get(name)
            assert spec is not None
            self.assertEqual((spec.name, spec.priority), (name, priority))

    def test_specs_highest_priority_first(self) -> None:
        """specs() runs highest priority first: ssl first, the priority-0 plugins last."""
        specs = self.registry.specs()
        priorities = [s.priority for s in specs]
        self.assertEqual(priorities, sorted(priorities, reverse=True))
        self.assertEqual(specs[0].name, "ssl")
        self.assertEqual({s.name for s in specs[-3:]}, {"tcp-log", "galileo", "correlation-id"})

    def test_unknown_name(self) -> None:
        """get() answers None for a plugin that is not loaded."""
        self.assertIsNone(self.registry.get("nope"))

    def test_entity_schemas_cover_plugin_tables(self) -> None:
        """Plugin-owned collections are exactly the store's plugin tables, with matching columns."""
        entities = self.registry.entity_schemas()
        self.assertEqual(
            set(entities),
            {name for name in TABLES if OWNERS[name] != "core"},
        )
        for name, schema in entities.items():
            self.assertEqual(schema.name, name)
            self.assertEqual(set(schema.fields), set(TABLES[name].column_names), name)
            self.assertEqual(schema.primary_key, TABLES[name].primary_key, name)

    def test_credential_routes(self) -> None:
        """The six consumer-scoped routes of SPEC §1.6 with their natural keys."""
        routes = {r.path: (r.collection, r.natural_key) for r in self.registry.credential_routes()}
        self.assertEqual(
            routes,
            {
                "key-auth": ("keyauth_credentials", "key"),
                "basic-auth": ("basicauth_credentials", "username"),
                "hmac-auth": ("hmacauth_credentials", "username"),
                "jwt": ("jwt_secrets", "key"),
                "oauth2": ("oauth2_credentials", "client_id"),
                "acls": ("acls", "group"),
            },
        )


class HandlerTests(SynchronousTestCase):
    def test_handler_attached_when_present(self) -> None:
        """A plugin whose package has handler.Handler gets it as spec.handler."""

        class Handler:
            pass

        spec = custom_spec()
        with fake_modules(
            withhandler=module("withhandler", package=True, SPEC=spec),
            **{"withhandler.handler": module("withhandler.handler", Handler=Handler)},
        ):
            loaded = load_spec("withhandler")
        self.assertIs(loaded.handler, Handler)
        self.assertIsNone(spec.handler)

    def test_no_handler_module(self) -> None:
        """A plugin without a handler module loads with handler None."""
        with fake_modules(nohandler=module("nohandler", SPEC=custom_spec())):
            self.assertIsNone(load_spec("nohandler").handler)

    def test_broken_handler_is_a_clear_error(self) -> None:
        """A handler module without a Handler class names the plugin and the module."""
        with fake_modules(
            badhandler=module("badhandler", package=True, SPEC=custom_spec()),
            **{"badhandler.handler": module("badhandler.handler")},
        ):
            e = self.assertRaises(PluginLoadError, load_spec, "badhandler")
        self.assertIn("my-plugin", str(e))
        self.assertIn("badhandler.handler", str(e))


class CustomPluginTests(SynchronousTestCase):
    def test_custom_plugin_loaded(self) -> None:
        """custom_plugins adds importable modules exposing SPEC to the bundled set."""
        entity = EntitySchema(name="my_things", fields={"id": Field(type="id")})
        route = CredentialRoute("things", "my_things", "id")
        spec = custom_spec(entities={"my_things": entity}, routes=(route,))
        with fake_modules(mine=module("mine", SPEC=spec)):
            registry = PluginRegistry.load([" mine ", ""])
        self.assertIn("my-plugin", registry.names())
        self.assertEqual(len(registry.names()), len(PRIORITIES) + 1)
        self.assertIs(registry.entity_schemas()["my_things"], entity)
        self.assertIn(route, registry.credential_routes())

    def test_missing_module(self) -> None:
        """A custom plugin that cannot be imported fails loudly, naming it."""
        e = self.assertRaises(PluginLoadError, PluginRegistry.load, ["no_such_plugin_mod"])
        self.assertIn("no_such_plugin_mod", str(e))

    def test_module_without_spec(self) -> None:
        """A module without a PluginSpec called SPEC is refused."""
        with fake_modules(nospec=module("nospec", SPEC="not a spec")):
            e = self.assertRaises(PluginLoadError, PluginRegistry.load, ["nospec"])
        self.assertIn("exposes no SPEC", str(e))

    def test_duplicate_names_and_collections(self) -> None:
        """Two plugins with one name, or one collection, are refused."""
        with fake_modules(dup=module("dup", SPEC=custom_spec("cors"))):
            e = self.assertRaises(PluginLoadError, PluginRegistry.load, ["dup"])
        self.assertIn("'cors' is loaded twice", str(e))
        entity = EntitySchema(name="acls", fields={})
        e = self.assertRaises(
            PluginLoadError,
            PluginRegistry,
            [
                custom_spec("a", entities={"acls": entity}),
                custom_spec("b", entities={"acls": entity}),
            ],
        )
        self.assertIn("already belongs", str(e))

    def test_no_consumer_synchronised(self) -> None:
        """A spec's no_consumer is what its config schema reports to the DAO."""
        with fake_modules(nc=module("nc", SPEC=custom_spec(no_consumer=True))):
            spec = load_spec("nc")
        self.assertTrue(spec.config_schema.no_consumer)
