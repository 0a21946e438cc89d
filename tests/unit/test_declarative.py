"""Declarative configuration: parsing, validation with entity paths, export, DB-less Admin API."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from test_admin_support import AdminHarness
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx import declarative
from kongtx.admin.resource import AdminResource
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.config import ConfigError
from kongtx.config_loading import load_config
from kongtx.dao import DAO
from kongtx.declarative import DeclarativeError, DeclarativeState
from kongtx.plugins.basic_auth.crypto import verify_basicauth_password
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.factory import open_store
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

T = TypeVar("T")
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "declarative")
KONG_YML = os.path.join(FIXTURES, "kong.yml")
INVALID_YML = os.path.join(FIXTURES, "invalid.yml")
REGISTRY = PluginRegistry.load()

MINIMAL = {
    "_format_version": "1.1",
    "apis": [{"name": "a", "request_host": "a.test", "upstream_url": "http://up.test"}],
}


def ids(value: Any) -> list[str]:
    """Every ``id`` in a document, depth first."""
    found: list[str] = []
    if isinstance(value, dict):
        if "id" in value:
            found.append(value["id"])
        for v in value.values():
            found.extend(ids(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(ids(v))
    return found


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1_480_000_000)
        self.clock = Clock(self.reactor)
        self.store = MemoryStore(TABLES, "node-a", self.clock)
        self.dao = DAO(self.store, REGISTRY, self.clock)

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def errors(self, coro: Coroutine[Any, Any, Any]) -> list[str]:
        failure = self.failureResultOf(Deferred.fromCoroutine(coro), DeclarativeError)
        errors: list[str] = failure.value.errors
        return errors

    def loaded(self, document: dict[str, Any]) -> DAO:
        store, _ = self.wait(declarative.validate_document(document, self.dao))
        return DAO(store, REGISTRY, self.clock)


class ParseTests(Base):
    def test_yaml_and_json(self) -> None:
        """YAML and JSON text give the same document."""
        self.assertEqual(declarative.parse(json.dumps(MINIMAL)), MINIMAL)
        self.assertEqual(declarative.parse(declarative.dump(MINIMAL)), MINIMAL)

    def test_syntax_error_names_line(self) -> None:
        """A YAML syntax error names the source and the line."""
        with self.assertRaises(DeclarativeError) as e:
            declarative.parse("apis:\n  - name: [unclosed\n", "kong.yml")
        self.assertIn("kong.yml: cannot parse (line 3", e.exception.errors[0])

    def test_not_a_mapping(self) -> None:
        """A document that is a list or a scalar is refused."""
        for text in ("- a\n- b\n", "just text"):
            with self.assertRaises(DeclarativeError) as e:
                declarative.parse(text, "x")
            self.assertEqual(e.exception.errors, ["x: the document must be a mapping (an object)"])

    def test_safe_load_only(self) -> None:
        """Python object tags are refused (safe_load), never constructed."""
        with self.assertRaises(DeclarativeError):
            declarative.parse("a: !!python/object/apply:os.system ['true']\n")

    def test_missing_file(self) -> None:
        """A missing file is one error naming it."""
        with self.assertRaises(DeclarativeError) as e:
            declarative.read_file("/nonexistent/kong.yml")
        self.assertTrue(e.exception.errors[0].startswith("/nonexistent/kong.yml: cannot read"))

    def test_dump_json_by_extension(self) -> None:
        """``.json`` file names export JSON, everything else YAML."""
        self.assertEqual(declarative.format_for("x.JSON"), "json")
        self.assertEqual(declarative.format_for("kong.yml"), "yaml")
        self.assertEqual(declarative.format_for(None), "yaml")
        self.assertEqual(json.loads(declarative.dump(MINIMAL, "json")), MINIMAL)


class LoadTests(Base):
    def test_fixture_loads_every_kind(self) -> None:
        """The fixture loads APIs, consumers, every nesting of plugins and credentials."""
        document = declarative.read_file(KONG_YML)
        _, result = self.wait(declarative.validate_document(document, self.dao))
        self.assertEqual(
            result.counts,
            {
                "apis": 2,
                "consumers": 2,
                "basicauth_credentials": 1,
                "keyauth_credentials": 2,
                "acls": 1,
                "plugins": 4,
            },
        )

    def test_defaults_and_links(self) -> None:
        """Defaults are applied as by the Admin API, nested plugins get their api/consumer."""
        dao = self.loaded(declarative.read_file(KONG_YML))
        echo = self.wait(dao.find("apis", {"name": "echo"}))
        assert echo is not None
        self.assertFalse(echo["preserve_host"])
        key_auth = self.wait(dao.find_all("plugins", {"name": "key-auth"}))[0]
        self.assertEqual(key_auth["api_id"], echo["id"])
        self.assertEqual(key_auth["config"]["key_names"], ["apikey"])
        self.assertFalse(key_auth["config"]["hide_credentials"])
        alice = self.wait(dao.find("consumers", {"username": "alice"}))
        assert alice is not None
        limit = self.wait(dao.find_all("plugins", {"name": "rate-limiting"}))[0]
        self.assertEqual((limit["api_id"], limit["consumer_id"]), (echo["id"], alice["id"]))
        key = self.wait(dao.find("keyauth_credentials", {"key": "alice-secret"}))
        assert key is not None
        self.assertEqual(key["consumer_id"], alice["id"])

    def test_ids_are_deterministic(self) -> None:
        """Loading the same file twice gives the same ids; a given id is kept."""
        document = declarative.read_file(KONG_YML)
        first = self.wait(declarative.export_document(self.loaded(document)))
        second = self.wait(declarative.export_document(self.loaded(document)))
        self.assertEqual(ids(first), ids(second))
        self.assertEqual(len(ids(first)), 12)
        given = "8e4bc1c0-2f1a-4f2b-9d1e-0c1f2a3b4c5d"
        doc = {**MINIMAL, "apis": [{**MINIMAL["apis"][0], "id": given.upper()}]}  # type: ignore[dict-item]
        api = self.wait(self.loaded(doc).find("apis", {"name": "a"}))
        assert api is not None
        self.assertEqual(api["id"], given)

    def test_created_at_kept(self) -> None:
        """A document's created_at is kept; without one the load time is used."""
        doc = {**MINIMAL, "apis": [{**MINIMAL["apis"][0], "created_at": 1234}]}  # type: ignore[dict-item]
        api = self.wait(self.loaded(doc).find("apis", {"name": "a"}))
        assert api is not None
        self.assertEqual(api["created_at"], 1234)
        api = self.wait(self.loaded(MINIMAL).find("apis", {"name": "a"}))
        assert api is not None
        self.assertEqual(api["created_at"], 1_480_000_000_000)

    def test_errors_name_path_and_field(self) -> None:
        """Every invalid entity is reported, each line naming its path and field."""
        errors = self.errors(
            declarative.validate_document(declarative.read_file(INVALID_YML), self.dao)
        )
        self.assertEqual(
            errors,
            [
                "apis[1].upstream_url: Supported protocols are HTTP and HTTPS",
                "apis[2].request_host: Invalid value: a b",
                'plugins[0].config: Plugin "no-such-plugin" not found',
            ],
        )

    def test_document_shape_errors(self) -> None:
        """Version, unknown keys, non-lists and non-objects are each one line."""
        document = {
            "_format_version": "0.1",
            "services": [],
            "apis": {"name": "x"},
            "consumers": ["bob"],
        }
        self.assertEqual(
            self.errors(declarative.validate_document(document, self.dao)),
            [
                '_format_version: "0.1" is not supported (supported: "1.1")',
                "services: is an unknown key",
                "apis: must be a list",
                "consumers[0]: must be a mapping (an object)",
            ],
        )
        self.assertEqual(
            self.errors(declarative.validate_document({}, self.dao)),
            ['_format_version: is required ("1.1")'],
        )

    def test_entity_level_errors(self) -> None:
        """Conflicts, references and entity checks name the entity."""
        document = {
            "_format_version": "1.1",
            "apis": [MINIMAL["apis"][0], {**MINIMAL["apis"][0], "id": "not-a-uuid"}],  # type: ignore[dict-item]
            "consumers": [{"custom_id": ""}, {"username": "c", "acls": [{"group": "g"}] * 2}],
            "plugins": [
                {"name": "cors", "api": "missing"},
                {"name": "key-auth", "consumer": "c"},
            ],
        }
        errors = self.errors(declarative.validate_document(document, self.dao))
        self.assertEqual(
            errors,
            [
                "apis[1].id: not-a-uuid is not a valid uuid",
                "consumers[0].custom_id: At least a 'custom_id' or a 'username' must be specified",
                "consumers[0].username: At least a 'custom_id' or a 'username' must be specified",
                "consumers[1].acls[1].group: ACL group already exist for this consumer",
                "plugins[0].api: does not exist with value 'missing'",
                "plugins[1]: No consumer can be configured for that plugin",
            ],
        )

    def test_duplicate_name_conflicts(self) -> None:
        """Two APIs with one name: the second is a conflict naming the field."""
        document = {"_format_version": "1.1", "apis": [MINIMAL["apis"][0]] * 2}
        errors = self.errors(declarative.validate_document(document, self.dao))
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("apis[1]."), errors)
        self.assertIn("already exists with value", errors[0])

    def test_children_of_invalid_parent_skipped(self) -> None:
        """An invalid API's nested plugins are not reported again."""
        document = {
            "_format_version": "1.1",
            "apis": [{"name": "x", "upstream_url": "http://up", "plugins": [{"name": "cors"}]}],
        }
        errors = self.errors(declarative.validate_document(document, self.dao))
        self.assertEqual(len(errors), 2)
        self.assertTrue(all(e.startswith("apis[0].request_") for e in errors), errors)


class ExportTests(Base):
    def test_round_trip(self) -> None:
        """export -> load -> export gives the same document (ids, created_at, nesting)."""
        exported = self.wait(
            declarative.export_document(self.loaded(declarative.read_file(KONG_YML)))
        )
        text = declarative.dump(exported)
        again = self.wait(declarative.export_document(self.loaded(declarative.parse(text))))
        self.assertEqual(again, exported)
        self.assertEqual([a["name"] for a in exported["apis"]], ["echo", "open"])
        self.assertEqual([p["name"] for p in exported["apis"][0]["plugins"]], ["key-auth"])
        self.assertNotIn("api_id", exported["apis"][0]["plugins"][0])
        self.assertEqual(
            [p["name"] for p in exported["plugins"]], ["correlation-id", "rate-limiting"]
        )

    def test_password_hash_survives(self) -> None:
        """A basic-auth password is hashed once; re-importing its export keeps it working."""
        exported = self.wait(
            declarative.export_document(self.loaded(declarative.read_file(KONG_YML)))
        )
        stored = exported["consumers"][0]["basicauth_credentials"][0]["password"]
        self.assertNotEqual(stored, "wonderland")
        dao = self.loaded(declarative.parse(declarative.dump(exported)))
        row = self.wait(dao.find("basicauth_credentials", {"username": "alice"}))
        assert row is not None
        self.assertEqual(row["password"], stored)
        self.assertTrue(verify_basicauth_password(stored, "wonderland", row["consumer_id"]))

    def test_empty(self) -> None:
        """An empty datastore exports only the format version."""
        self.assertEqual(
            self.wait(declarative.export_document(self.dao)), {"_format_version": "1.1"}
        )


class ImportTests(Base):
    def test_import_into_store(self) -> None:
        """db_import writes every entity through the DAO, with change events, idempotently."""
        document = declarative.read_file(KONG_YML)
        changes: list[Any] = []
        self.dao.add_listener(lambda *c: changes.append(c))
        result = self.wait(declarative.import_document(document, self.dao))
        self.assertEqual(result.counts["apis"], 2)
        self.assertEqual(len(changes), 12)
        first = self.wait(declarative.export_document(self.dao))
        self.wait(declarative.import_document(document, self.dao))
        second = self.wait(declarative.export_document(self.dao))
        self.assertEqual(ids(second), ids(first))
        self.assertEqual(second["apis"], first["apis"])
        self.assertEqual(self.wait(self.dao.count("apis", {})), 2)

    def test_invalid_document_writes_nothing(self) -> None:
        """An invalid document is refused before anything reaches the datastore."""
        errors = self.errors(
            declarative.import_document(declarative.read_file(INVALID_YML), self.dao)
        )
        self.assertEqual(len(errors), 3)
        self.assertEqual(self.wait(self.dao.count("apis", {})), 0)

    def test_conflict_with_existing_rows_stops(self) -> None:
        """A conflict with a row already stored stops at that entity, naming it."""
        self.wait(
            self.dao.insert(
                "apis",
                {"name": "other", **{"request_host": "a.test", "upstream_url": "http://up.test"}},
            )
        )
        errors = self.errors(declarative.import_document(MINIMAL, self.dao))
        self.assertEqual(errors, ["apis[0].request_host: already exists with value 'a.test'"])


class StateTests(Base):
    def test_replace_swaps_and_flushes(self) -> None:
        """A valid document replaces the store whole and empties the cache."""
        cache = Cache(self.clock)
        cache.set("ALL_APIS_BY_DIC", "old router")
        state = DeclarativeState(self.dao, cache)
        old_store = self.dao.store
        self.wait(state.replace(declarative.read_file(KONG_YML)))
        self.assertIsNot(self.dao.store, old_store)
        self.assertNotIn("ALL_APIS_BY_DIC", cache)
        self.assertEqual(self.wait(self.dao.count("apis", {})), 2)

    def test_replace_hooks(self) -> None:
        """Hooks hear each document in force, never an invalid one; a failing hook is contained."""
        state = DeclarativeState(self.dao, Cache(self.clock))
        heard: list[Any] = []

        def broken(document: Any) -> None:
            raise RuntimeError("hook bug")

        state.replaced += [broken, heard.append]
        self.wait(state.replace(MINIMAL))
        self.errors(state.replace(declarative.read_file(INVALID_YML)))
        self.assertEqual(heard, [MINIMAL])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_replace_keeps_created_at(self) -> None:
        """Posting the same document again later keeps every id and created_at."""
        state = DeclarativeState(self.dao, Cache(self.clock))
        first = self.wait(state.replace(declarative.read_file(KONG_YML)))
        before = self.wait(state.export())
        self.reactor.advance(60)
        self.wait(state.replace(declarative.read_file(KONG_YML)))
        after = self.wait(state.export())
        self.assertEqual(after["apis"], before["apis"])
        self.assertEqual(after["apis"][0]["created_at"], 1_480_000_000_000)
        self.assertEqual(first.counts["apis"], 2)

    def test_invalid_replace_changes_nothing(self) -> None:
        """An invalid document leaves the store and the cache as they were."""
        cache = Cache(self.clock)
        state = DeclarativeState(self.dao, cache)
        self.wait(state.replace(MINIMAL))
        store = self.dao.store
        cache.set("ALL_APIS_BY_DIC", "router")
        self.errors(state.replace(declarative.read_file(INVALID_YML)))
        self.assertIs(self.dao.store, store)
        self.assertIn("ALL_APIS_BY_DIC", cache)

    def test_start_loads_file(self) -> None:
        """At start the file named by declarative_config becomes the DAO's store."""
        config = load_config(
            None, env={"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": KONG_YML}
        )
        result = self.wait(declarative.load_declarative_config(config, self.dao))
        assert result is not None
        self.assertEqual(self.wait(self.dao.count("consumers", {})), 2)
        empty = dataclasses.replace(config, declarative_config=None)
        self.assertIsNone(self.wait(declarative.load_declarative_config(empty, self.dao)))

    def test_start_errors_name_file(self) -> None:
        """A bad file at start: one line per error, each naming the file."""
        config = load_config(
            None, env={"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": INVALID_YML}
        )
        errors = self.errors(declarative.load_declarative_config(config, self.dao))
        self.assertEqual(len(errors), 3)
        self.assertTrue(all(e.startswith(os.path.abspath(INVALID_YML) + ": ") for e in errors))
        self.assertIsInstance(DeclarativeError([]), ConfigError)


class ConfigTests(SynchronousTestCase):
    def test_database_off(self) -> None:
        """``database = off`` is accepted and opens an in-memory store."""
        config = load_config(None, env={"KONG_DATABASE": "off"})
        self.assertEqual(config.database, "off")
        self.assertIsNone(config.declarative_config)
        store = open_store(config, task.Clock(), Clock(task.Clock()), "n")
        self.assertIsInstance(store, MemoryStore)

    def test_missing_declarative_file(self) -> None:
        """A declarative_config that does not exist stops the configuration."""
        with self.assertRaises(ConfigError) as e:
            load_config(
                None, env={"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": "/nope/kong.yml"}
            )
        self.assertEqual(e.exception.errors, ["declarative_config: no such file at /nope/kong.yml"])


class DblessAdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.admin.config = load_config(None, env={"KONG_DATABASE": "off"})
        self.admin.resource = AdminResource(
            self.admin.dao,
            self.admin.cache,
            self.admin.config,
            self.admin.registry,
            self.admin.node,
            self.admin.clock,
        )
        from treq.testing import StubTreq

        self.admin.treq = StubTreq(self.admin.resource)

    def test_entity_writes_are_405(self) -> None:
        """Every entity write answers 405 with a message naming DB-less mode and /config."""
        for method, path in (
            ("POST", "/apis"),
            ("PUT", "/consumers"),
            ("PATCH", "/apis/x"),
            ("DELETE", "/plugins/8e4bc1c0-2f1a-4f2b-9d1e-0c1f2a3b4c5d"),
            ("POST", "/consumers/bob/key-auth"),
        ):
            response = self.admin.call(method, path, json_body={"name": "x"})
            self.assertEqual(response.status, 405, (method, path))
            self.assertEqual(
                response.json,
                {
                    "message": f"cannot {method} {path} in DB-less mode (database = off): "
                    "POST /config replaces the whole configuration"
                },
            )

    def test_reads_and_cache_still_work(self) -> None:
        """Reads, undeclared methods and non-entity writes behave as with a datastore."""
        self.admin.ok("GET", "/apis")
        self.assertEqual(self.admin.call("DELETE", "/apis").status, 405)
        self.assertEqual(self.admin.call("DELETE", "/apis").json, {"message": "Method not allowed"})
        self.admin.ok("DELETE", "/cache", 204)

    def test_post_config_json(self) -> None:
        """POST /config with a JSON document replaces the configuration (201, the document)."""
        body = self.admin.ok("POST", "/config", 201, json_body=MINIMAL)
        self.assertEqual(body["apis"][0]["name"], "a")
        self.assertEqual(self.admin.ok("GET", "/apis/a")["request_host"], "a.test")
        self.assertEqual(self.admin.ok("GET", "/config"), body)

    def test_post_config_yaml_and_form(self) -> None:
        """YAML bodies and a form ``config`` field are accepted too."""
        with open(KONG_YML, "rb") as f:
            text = f.read()
        self.admin.ok("POST", "/config", 201, data=text, headers={"Content-Type": "text/yaml"})
        self.assertEqual(self.admin.ok("GET", "/apis")["total"], 2)
        self.admin.ok(
            "POST",
            "/config",
            201,
            form={"config": declarative.dump(MINIMAL)},
        )
        self.assertEqual(self.admin.ok("GET", "/apis")["total"], 1)
        wrapped = {"config": json.dumps(MINIMAL)}
        self.admin.ok("POST", "/config", 201, json_body=wrapped)

    def test_post_config_invalid(self) -> None:
        """An invalid document is 400 with every error; the configuration is unchanged."""
        self.admin.ok("POST", "/config", 201, json_body=MINIMAL)
        with open(INVALID_YML, "rb") as f:
            response = self.admin.call(
                "POST", "/config", data=f.read(), headers={"Content-Type": "application/x-yaml"}
            )
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json["message"], "declarative config is invalid")
        self.assertEqual(len(response.json["errors"]), 3)
        self.assertEqual(self.admin.ok("GET", "/apis")["data"][0]["name"], "a")
        bad = self.admin.call(
            "POST", "/config", data=b"a: [", headers={"Content-Type": "text/yaml"}
        )
        self.assertEqual(bad.status, 400)
        self.assertIn("cannot parse", bad.json["errors"][0])

    def test_post_config_clears_cache(self) -> None:
        """A replacement empties the node cache, so the router is rebuilt."""
        self.admin.cache.set("ALL_APIS_BY_DIC", "old")
        self.admin.ok("POST", "/config", 201, json_body=MINIMAL)
        self.assertNotIn("ALL_APIS_BY_DIC", self.admin.cache)


class DatabaseModeAdminTests(SynchronousTestCase):
    def test_post_config_refused_get_exports(self) -> None:
        """With a datastore POST /config is 400 and GET /config exports the datastore."""
        admin = AdminHarness(self)
        admin.api("seeded")
        response = admin.call("POST", "/config", json_body=MINIMAL)
        self.assertEqual(response.status, 400)
        self.assertEqual(
            response.json,
            {
                "message": "this endpoint is only available when Kong is configured "
                "to not use a database"
            },
        )
        document = admin.ok("GET", "/config")
        self.assertEqual(document["apis"][0]["name"], "seeded")
        admin.ok(
            "POST", "/apis", 201, json_body={"request_host": "b.test", "upstream_url": "http://b"}
        )


class CliParserTests(SynchronousTestCase):
    def test_config_subcommands(self) -> None:
        """``kong config`` takes parse/db_import/db_export, an optional file and ``-c``."""
        from kongtx.cli import build_parser
        from kongtx.cli.datastore import cmd_config

        args = build_parser().parse_args(["config", "db_import", "kong.yml", "-c", "a.conf"])
        self.assertEqual((args.command, args.file, args.conf), ("db_import", "kong.yml", "a.conf"))
        self.assertIs(args.func, cmd_config)
        args = build_parser().parse_args(["config", "db_export"])
        self.assertIsNone(args.file)
        with self.assertRaises(SystemExit):
            build_parser().parse_args(["config", "db_drop"])
