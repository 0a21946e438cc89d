"""The DAO over the in-memory store: validation, defaults, PUT/PATCH rules, errors, listeners."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_plugin_schemas import self_signed
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.dao import DAO
from kongtx.errors import (
    ConflictError,
    DatabaseError,
    EntityError,
    ForeignKeyError,
    NotFoundError,
    PluginExistsError,
    SchemaError,
)
from kongtx.plugins.basic_auth.crypto import legacy_hash, verify_basicauth_password
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

T = TypeVar("T")
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
MISSING = "00000000-0000-4000-8000-000000000000"
REGISTRY = PluginRegistry.load()


class DaoTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1_480_000_000)
        self.clock = Clock(self.reactor)
        self.store = MemoryStore(TABLES, "node-a", self.clock)
        self.threaded: list[str] = []

        async def run_in_thread(fn: Callable[[], T]) -> T:
            self.threaded.append(getattr(fn, "__name__", "fn"))
            return fn()

        self.dao = DAO(self.store, REGISTRY, self.clock, run_in_thread)
        self.changes: list[tuple[str, str, Any, Any]] = []
        self.dao.add_listener(lambda *change: self.changes.append(change))

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def fails(self, exc: type[Exception], coro: Coroutine[Any, Any, Any]) -> Any:
        failure = self.failureResultOf(Deferred.fromCoroutine(coro), exc)
        return failure.value

    def api(self, **kw: Any) -> dict[str, Any]:
        values = {"request_host": "example.com", "upstream_url": "http://up.test", **kw}
        return self.wait(self.dao.insert("apis", values))

    def consumer(self, username: str = "bob") -> dict[str, Any]:
        return self.wait(self.dao.insert("consumers", {"username": username}))


class InsertTests(DaoTestCase):
    def test_insert_generates_id_and_created_at(self) -> None:
        """Insert fills id (uuid4), created_at (ms from the clock) and defaults; every column."""
        api = self.api(id="ignored", created_at=5)
        self.assertRegex(api["id"], UUID_RE)
        self.assertEqual(api["created_at"], 1_480_000_000_000)
        self.assertEqual(
            api,
            {
                "id": api["id"],
                "created_at": 1_480_000_000_000,
                "name": "example.com",
                "request_host": "example.com",
                "request_path": None,
                "strip_request_path": False,
                "preserve_host": False,
                "upstream_url": "http://up.test",
                "tags": None,
            },
        )
        self.assertEqual(self.wait(self.dao.find("apis", {"id": api["id"]})), api)
        self.assertEqual(self.changes, [("apis", "create", None, api)])

    def test_validation_errors(self) -> None:
        """Schema errors surface as SchemaError; nothing is written or announced."""
        e = self.fails(SchemaError, self.dao.insert("apis", {"request_host": "h"}))
        self.assertEqual(e.fields, {"upstream_url": "upstream_url is required"})
        self.assertEqual(self.wait(self.dao.count("apis", {})), 0)
        self.assertEqual(self.changes, [])

    def test_unique_violation_is_conflict(self) -> None:
        """A taken unique value is ConflictError naming the field and value."""
        self.api()
        e = self.fails(
            ConflictError,
            self.dao.insert(
                "apis",
                {"request_host": "other.com", "name": "example.com", "upstream_url": "http://u"},
            ),
        )
        self.assertEqual((e.field, e.value), ("name", "example.com"))

    def test_foreign_key(self) -> None:
        """An unknown or malformed foreign key is ForeignKeyError (404)."""
        e = self.fails(
            ForeignKeyError,
            self.dao.insert("keyauth_credentials", {"consumer_id": MISSING}),
        )
        self.assertEqual((e.field, e.value), ("consumer_id", MISSING))
        e = self.fails(
            ForeignKeyError, self.dao.insert("keyauth_credentials", {"consumer_id": "abc"})
        )
        self.assertEqual((e.field, e.value), ("consumer_id", "abc"))

    def test_uuid_case_normalised(self) -> None:
        """Foreign keys given in upper case are stored lower-case."""
        bob = self.consumer()
        cred = self.wait(self.dao.insert("keyauth_credentials", {"consumer_id": bob["id"].upper()}))
        self.assertEqual(cred["consumer_id"], bob["id"])
        self.assertRegex(cred["key"], "^[0-9a-f]{32}$")

    def test_store_unavailable(self) -> None:
        """An unreachable store is DatabaseError."""
        self.store.available = False
        e = self.fails(DatabaseError, self.dao.insert("consumers", {"username": "x"}))
        self.assertEqual(e.message, "The datastore is unavailable")
        self.fails(DatabaseError, self.dao.find_page("apis", {}, 10, None))


class PluginTests(DaoTestCase):
    def test_plugin_defaults_and_config(self) -> None:
        """A plugin gets enabled=true and its config defaults; config errors are config.<field>."""
        api = self.api()
        plugin = self.wait(
            self.dao.insert(
                "plugins",
                {"name": "rate-limiting", "api_id": api["id"], "config": {"minute": "10"}},
            )
        )
        self.assertIs(plugin["enabled"], True)
        self.assertEqual(plugin["config"]["minute"], 10)
        self.assertEqual(plugin["config"]["policy"], "cluster")
        self.assertIsNone(plugin["consumer_id"])
        e = self.fails(
            SchemaError,
            self.dao.insert("plugins", {"name": "rate-limiting", "config": {"hour": "x"}}),
        )
        self.assertEqual(e.fields, {"config.hour": "hour is not a number"})
        e = self.fails(SchemaError, self.dao.insert("plugins", {"name": "foo"}))
        self.assertEqual(e.fields, {"config": 'Plugin "foo" not found'})

    def test_duplicate_plugin(self) -> None:
        """The same (name, api_id, consumer_id) twice is PluginExistsError; other scopes are fine."""
        api = self.api()
        bob = self.consumer()
        self.wait(self.dao.insert("plugins", {"name": "key-auth", "api_id": api["id"]}))
        self.fails(
            PluginExistsError,
            self.dao.insert("plugins", {"name": "key-auth", "api_id": api["id"]}),
        )
        self.wait(self.dao.insert("plugins", {"name": "key-auth"}))
        self.fails(PluginExistsError, self.dao.insert("plugins", {"name": "key-auth"}))
        self.wait(
            self.dao.insert(
                "plugins",
                {"name": "rate-limiting", "consumer_id": bob["id"], "config": {"minute": 1}},
            )
        )
        self.wait(self.dao.insert("plugins", {"name": "rate-limiting", "config": {"minute": 1}}))

    def test_no_consumer(self) -> None:
        """A no_consumer plugin cannot be configured for a consumer."""
        bob = self.consumer()
        e = self.fails(
            EntityError, self.dao.insert("plugins", {"name": "key-auth", "consumer_id": bob["id"]})
        )
        self.assertEqual(e.message, "No consumer can be configured for that plugin")

    def test_patch_merges_config(self) -> None:
        """PATCH merges config key by key and does not re-apply defaults elsewhere."""
        plugin = self.wait(
            self.dao.insert("plugins", {"name": "rate-limiting", "config": {"minute": 10}})
        )
        patched = self.wait(
            self.dao.update("plugins", {"id": plugin["id"]}, {"config": {"hour": 100}})
        )
        assert patched is not None
        self.assertEqual(patched["config"]["minute"], 10)
        self.assertEqual(patched["config"]["hour"], 100)
        self.assertEqual(patched["config"]["policy"], "cluster")
        e = self.fails(
            SchemaError, self.dao.update("plugins", {"id": plugin["id"]}, {"config": {"day": 5}})
        )
        self.assertEqual(
            e.fields, {"config": "The limit for day cannot be lower than the limit for hour"}
        )

    def test_patch_name_cannot_change(self) -> None:
        """A plugin's name is immutable."""
        plugin = self.wait(self.dao.insert("plugins", {"name": "cors"}))
        e = self.fails(
            SchemaError, self.dao.update("plugins", {"id": plugin["id"]}, {"name": "acl"})
        )
        self.assertEqual(e.fields, {"name": "name cannot be updated"})

    def test_put_plugin_needs_matching_name(self) -> None:
        """A PUT keyed by (id, name) with another name matches no row."""
        plugin = self.wait(self.dao.insert("plugins", {"name": "cors"}))
        body = {"id": plugin["id"], "name": "acl", "created_at": plugin["created_at"]}
        self.fails(
            NotFoundError,
            self.dao.update("plugins", {"id": plugin["id"], "name": "acl"}, body, full=True),
        )
        replaced = self.wait(
            self.dao.update(
                "plugins",
                {"id": plugin["id"], "name": "cors"},
                {**body, "name": "cors", "config": {"origin": "x"}, "enabled": False},
                full=True,
            )
        )
        assert replaced is not None
        self.assertEqual(
            replaced["config"], {"origin": "x", "credentials": False, "preflight_continue": False}
        )
        self.assertIs(replaced["enabled"], False)


class UpdateTests(DaoTestCase):
    def test_patch(self) -> None:
        """PATCH merges the body into the stored row, validates the result and announces it."""
        api = self.api()
        new = self.wait(self.dao.update("apis", {"id": api["id"]}, {"request_path": "/p/"}))
        assert new is not None
        self.assertEqual(new["request_path"], "/p")
        self.assertEqual(new["request_host"], "example.com")
        self.assertEqual(new["created_at"], api["created_at"])
        self.assertEqual(self.changes[-1], ("apis", "update", api, new))

    def test_patch_missing_row_and_bad_id(self) -> None:
        """PATCH of an unknown row answers None; a non-uuid id is an entity error."""
        self.assertIsNone(self.wait(self.dao.update("apis", {"id": MISSING}, {"name": "x"})))
        e = self.fails(EntityError, self.dao.update("apis", {"id": "nope"}, {"name": "x"}))
        self.assertEqual(e.message, "nope is not a valid uuid")

    def test_patch_empty_body(self) -> None:
        """PATCH with nothing to change is refused."""
        api = self.api()
        e = self.fails(EntityError, self.dao.update("apis", {"id": api["id"]}, {}))
        self.assertEqual(e.message, "empty body")

    def test_patch_host_and_path_rule_on_merged_row(self) -> None:
        """Blanking the only request_host fails; the rule sees the merged row."""
        api = self.api()
        e = self.fails(
            SchemaError, self.dao.update("apis", {"id": api["id"]}, {"request_host": ""})
        )
        self.assertIn("request_path", e.fields)

    def test_patch_cannot_change_id_or_created_at(self) -> None:
        """Primary keys and created_at cannot be changed by a PATCH."""
        api = self.api()
        e = self.fails(SchemaError, self.dao.update("apis", {"id": api["id"]}, {"id": MISSING}))
        self.assertEqual(e.fields, {"id": "id cannot be updated"})
        e = self.fails(SchemaError, self.dao.update("apis", {"id": api["id"]}, {"created_at": 1}))
        self.assertEqual(e.fields, {"created_at": "created_at cannot be updated"})

    def test_put_replaces(self) -> None:
        """PUT sets unsupplied fields to NULL (defaults for NOT NULL ones) and keeps the id."""
        api = self.api(request_path="/p")
        body = {
            "id": api["id"],
            "created_at": api["created_at"],
            "request_host": "new.com",
            "upstream_url": "http://u2",
        }
        new = self.wait(self.dao.update("apis", {"id": api["id"]}, body, full=True))
        assert new is not None
        self.assertIsNone(new["request_path"])
        self.assertEqual(new["name"], "new.com")
        self.assertIs(new["strip_request_path"], False)
        self.assertEqual(new["id"], api["id"])

    def test_put_needs_created_at(self) -> None:
        """PUT without created_at is 'created_at is required'."""
        api = self.api()
        e = self.fails(
            SchemaError,
            self.dao.update(
                "apis",
                {"id": api["id"]},
                {"id": api["id"], "request_host": "h", "upstream_url": "http://u"},
                full=True,
            ),
        )
        self.assertEqual(e.fields, {"created_at": "created_at is required"})

    def test_put_unknown_id_is_not_found(self) -> None:
        """PUT with an id matching no row raises NotFoundError and creates nothing."""
        body = {"id": MISSING, "created_at": 1, "request_host": "h", "upstream_url": "http://u"}
        self.fails(NotFoundError, self.dao.update("apis", {"id": MISSING}, body, full=True))
        self.assertEqual(self.wait(self.dao.count("apis", {})), 0)

    def test_update_conflict(self) -> None:
        """Changing a unique field to a taken value is ConflictError."""
        self.api()
        other = self.api(request_host="other.com")
        e = self.fails(
            ConflictError, self.dao.update("apis", {"id": other["id"]}, {"name": "example.com"})
        )
        self.assertEqual(e.field, "name")


class DeleteAndFindTests(DaoTestCase):
    def test_delete_cascades_and_announces_each_row(self) -> None:
        """Deleting a consumer deletes its credentials; listeners hear every deleted row."""
        bob = self.consumer()
        cred = self.wait(self.dao.insert("keyauth_credentials", {"consumer_id": bob["id"]}))
        self.changes.clear()
        self.assertTrue(self.wait(self.dao.delete("consumers", {"id": bob["id"]})))
        self.assertEqual(
            self.changes,
            [("consumers", "delete", bob, None), ("keyauth_credentials", "delete", cred, None)],
        )
        self.assertFalse(self.wait(self.dao.delete("consumers", {"id": bob["id"]})))
        self.fails(EntityError, self.dao.delete("consumers", {"id": "x"}))

    def test_delete_by_natural_key(self) -> None:
        """A key other than the primary key is resolved first (credential item routes)."""
        bob = self.consumer()
        cred = self.wait(
            self.dao.insert("keyauth_credentials", {"consumer_id": bob["id"], "key": "k1"})
        )
        self.assertFalse(
            self.wait(self.dao.delete("keyauth_credentials", {"key": "k1", "consumer_id": MISSING}))
        )
        self.assertTrue(
            self.wait(
                self.dao.delete("keyauth_credentials", {"key": "k1", "consumer_id": bob["id"]})
            )
        )
        self.assertIsNone(self.wait(self.dao.find("keyauth_credentials", {"id": cred["id"]})))

    def test_find_by_unique_and_natural_keys(self) -> None:
        """find() accepts the primary key, a unique column, or a natural key with its consumer."""
        bob = self.consumer()
        acl = self.wait(self.dao.insert("acls", {"consumer_id": bob["id"], "group": "admins"}))
        self.assertEqual(self.wait(self.dao.find("consumers", {"username": "bob"})), bob)
        self.assertEqual(self.wait(self.dao.find("consumers", {"id": bob["id"].upper()})), bob)
        self.assertIsNone(self.wait(self.dao.find("consumers", {"id": "not-a-uuid"})))
        self.assertEqual(
            self.wait(self.dao.find("acls", {"group": "admins", "consumer_id": bob["id"]})), acl
        )

    def test_acl_group_unique_per_consumer(self) -> None:
        """The same group twice for one consumer is a 400 on group; other consumers may share it."""
        bob, ann = self.consumer("bob"), self.consumer("ann")
        self.wait(self.dao.insert("acls", {"consumer_id": bob["id"], "group": "g"}))
        e = self.fails(
            SchemaError, self.dao.insert("acls", {"consumer_id": bob["id"], "group": "g"})
        )
        self.assertEqual(e.fields, {"group": "ACL group already exist for this consumer"})
        other = self.wait(self.dao.insert("acls", {"consumer_id": ann["id"], "group": "g"}))
        self.wait(self.dao.insert("acls", {"consumer_id": ann["id"], "group": "h"}))
        e = self.fails(SchemaError, self.dao.update("acls", {"id": other["id"]}, {"group": "h"}))
        self.assertEqual(e.fields, {"group": "ACL group already exist for this consumer"})
        same = self.wait(self.dao.update("acls", {"id": other["id"]}, {"group": "g"}))
        assert same is not None
        self.assertEqual(same["group"], "g")


class ListingTests(DaoTestCase):
    def test_filters_validated_and_coerced(self) -> None:
        """Unknown columns and bad uuids are SchemaErrors; strings are coerced to the column type."""
        self.api()
        self.api(request_host="b.com", strip_request_path=True)
        e = self.fails(SchemaError, self.dao.find_page("apis", {"bogus": "1"}, 10, None))
        self.assertEqual(e.fields, {"bogus": "unknown field"})
        e = self.fails(SchemaError, self.dao.find_page("apis", {"id": "x"}, 10, None))
        self.assertEqual(e.fields, {"id": "x is not a valid uuid"})
        page = self.wait(self.dao.find_page("apis", {"strip_request_path": "true"}, 10, None))
        self.assertEqual([r["request_host"] for r in page.rows], ["b.com"])
        self.assertEqual(page.total, 1)
        self.assertEqual(self.wait(self.dao.count("apis", {"strip_request_path": "FALSE"})), 1)
        self.assertEqual(len(self.wait(self.dao.find_all("apis", {}))), 2)
        e = self.fails(SchemaError, self.dao.count("apis", {"created_at": "soon"}))
        self.assertEqual(e.fields, {"created_at": "created_at is not a timestamp"})

    def test_paging(self) -> None:
        """find_page pages with the store's opaque offsets."""
        for i in range(3):
            self.api(request_host=f"h{i}.com")
        first = self.wait(self.dao.find_page("apis", {}, 2, None))
        self.assertEqual((len(first.rows), first.total), (2, 3))
        assert first.offset is not None
        second = self.wait(self.dao.find_page("apis", {}, 2, first.offset))
        self.assertEqual(len(second.rows), 1)
        self.assertIsNone(second.offset)

    def test_schemas_match_tables(self) -> None:
        """Every collection the DAO knows has exactly the store table's columns."""
        self.assertEqual(set(self.dao.schemas), set(TABLES))
        for name, schema in self.dao.schemas.items():
            self.assertEqual(set(schema.fields), set(TABLES[name].column_names), name)


class CredentialTests(DaoTestCase):
    def test_basic_auth_password_hashed_in_thread(self) -> None:
        """basic-auth passwords are hashed through run_in_thread and verify afterwards."""
        bob = self.consumer()
        cred = self.wait(
            self.dao.insert(
                "basicauth_credentials",
                {"consumer_id": bob["id"], "username": "bob", "password": "pw"},
            )
        )
        self.assertEqual(len(self.threaded), 1)
        self.assertNotEqual(cred["password"], "pw")
        self.assertTrue(verify_basicauth_password(cred["password"], "pw", bob["id"]))

    def test_basic_auth_stored_value_not_rehashed(self) -> None:
        """Sending back the stored value (or a legacy SHA-1) keeps it; a new password is hashed."""
        bob = self.consumer()
        cred = self.wait(
            self.dao.insert(
                "basicauth_credentials",
                {"consumer_id": bob["id"], "username": "bob", "password": "pw"},
            )
        )
        self.threaded.clear()
        same = self.wait(
            self.dao.update(
                "basicauth_credentials", {"id": cred["id"]}, {"password": cred["password"]}
            )
        )
        assert same is not None
        self.assertEqual(same["password"], cred["password"])
        untouched = self.wait(
            self.dao.update("basicauth_credentials", {"id": cred["id"]}, {"username": "bobby"})
        )
        assert untouched is not None
        self.assertEqual(untouched["password"], cred["password"])
        self.assertEqual(self.threaded, [])
        legacy = legacy_hash("old", bob["id"])
        self.wait(
            self.store.update("basicauth_credentials", {"id": cred["id"]}, {"password": legacy})
        )
        kept = self.wait(
            self.dao.update("basicauth_credentials", {"id": cred["id"]}, {"password": legacy})
        )
        assert kept is not None
        self.assertEqual(kept["password"], legacy)
        self.assertTrue(verify_basicauth_password(kept["password"], "old", bob["id"]))
        changed = self.wait(
            self.dao.update("basicauth_credentials", {"id": cred["id"]}, {"password": "new"})
        )
        assert changed is not None
        self.assertTrue(verify_basicauth_password(changed["password"], "new", bob["id"]))

    def test_oauth2_token_ttl(self) -> None:
        """Expiring oauth2 tokens are written with the 14-day TTL and vanish after it."""
        bob = self.consumer()
        app = self.wait(
            self.dao.insert(
                "oauth2_credentials",
                {"consumer_id": bob["id"], "name": "app", "redirect_uri": "http://cb.test/"},
            )
        )
        self.assertEqual(app["redirect_uri"], ["http://cb.test/"])
        token = self.wait(
            self.dao.insert("oauth2_tokens", {"credential_id": app["id"], "expires_in": 10})
        )
        forever = self.wait(
            self.dao.insert("oauth2_tokens", {"credential_id": app["id"], "expires_in": 0})
        )
        self.reactor.advance(1_209_601)
        self.assertIsNone(self.wait(self.dao.find("oauth2_tokens", {"id": token["id"]})))
        self.assertIsNotNone(self.wait(self.dao.find("oauth2_tokens", {"id": forever["id"]})))

    def test_listener_failure_does_not_break_writes(self) -> None:
        """A failing listener is logged; the write still succeeds and others still hear it."""

        def boom(*change: Any) -> None:
            raise RuntimeError("listener bug")

        heard: list[Any] = []
        self.dao.add_listener(boom)
        self.dao.add_listener(lambda *c: heard.append(c))
        self.consumer()
        self.assertEqual(len(heard), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MoreWriteTests(DaoTestCase):
    def test_blank_reference_is_null(self) -> None:
        """A blank api_id from a form means a global plugin, not a bad foreign key."""
        plugin = self.wait(self.dao.insert("plugins", {"name": "cors", "api_id": " "}))
        self.assertIsNone(plugin["api_id"])

    def test_ssl_patch_keeps_der_caches(self) -> None:
        """Patching an ssl plugin's flag keeps its cert and recomputes nothing by hand."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        api = self.api()
        plugin = self.wait(
            self.dao.insert(
                "plugins",
                {
                    "name": "ssl",
                    "api_id": api["id"],
                    "config": {"cert": self_signed(key), "key": key_pem},
                },
            )
        )
        patched = self.wait(
            self.dao.update("plugins", {"id": plugin["id"]}, {"config": {"only_https": "true"}})
        )
        assert patched is not None
        self.assertIs(patched["config"]["only_https"], True)
        for field in ("cert", "key", "_cert_der_cache", "_key_der_cache"):
            self.assertEqual(patched["config"][field], plugin["config"][field], field)
        e = self.fails(
            SchemaError,
            self.dao.update("plugins", {"id": plugin["id"]}, {"config": {"_cert_der_cache": "x"}}),
        )
        self.assertEqual(e.fields, {"config._cert_der_cache": "_cert_der_cache cannot be updated"})

    def test_generated_key_regenerated_when_blanked(self) -> None:
        """Patching a key-auth key to blank generates a fresh one (Kong's generate_if_missing)."""
        bob = self.consumer()
        cred = self.wait(
            self.dao.insert("keyauth_credentials", {"consumer_id": bob["id"], "key": "mine"})
        )
        self.assertEqual(cred["key"], "mine")
        new = self.wait(self.dao.update("keyauth_credentials", {"id": cred["id"]}, {"key": ""}))
        assert new is not None
        self.assertRegex(new["key"], "^[0-9a-f]{32}$")

    def test_nodes_by_name(self) -> None:
        """nodes are keyed by name and need no generated id."""
        node = self.wait(
            self.dao.insert("nodes", {"name": "n1", "cluster_listening_address": "1.2.3.4:7946"})
        )
        self.assertEqual(node["created_at"], 1_480_000_000_000)
        self.assertEqual(self.wait(self.dao.find("nodes", {"name": "n1"})), node)
        self.assertTrue(self.wait(self.dao.delete("nodes", {"name": "n1"})))
