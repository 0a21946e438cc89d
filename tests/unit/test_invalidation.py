"""Which cache keys a change clears (SPEC §6.4), and that they are really cleared."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.invalidation import apply, keys_for, listener, plugin_key

API = {"id": "a1", "name": "x", "request_host": "Example.COM", "request_path": None}


class KeysForTests(SynchronousTestCase):
    def test_api_change_clears_router_api_sni_ssl_and_chain(self) -> None:
        """An API update clears the router, apis:<id>, the SNI key of old and new host, ssl and its chain."""
        new = dict(API, request_host="other.org")
        keys = keys_for("apis", API, new)
        self.assertEqual(
            set(keys),
            {
                "ALL_APIS_BY_DIC",
                "apis:a1",
                "ssl:a1",
                "plugins_chain:a1",
                "apis:example.com",
                "apis:other.org",
            },
        )

    def test_plugin_keys_follow_kong_naming(self) -> None:
        """plugins:<name>[:<api_id>][:<consumer_id>] for the old and the new row."""
        old = {"id": "p", "name": "rate-limiting", "api_id": "a1", "consumer_id": None}
        new = {"id": "p", "name": "rate-limiting", "api_id": "a1", "consumer_id": "c1"}
        keys = keys_for("plugins", old, new)
        self.assertIn("plugins:rate-limiting:a1", keys)
        self.assertIn("plugins:rate-limiting:a1:c1", keys)
        self.assertIn("plugins_chain:a1", keys)
        self.assertEqual(plugin_key("cors", None, None), "plugins:cors")
        self.assertEqual(plugin_key("cors", None, "c"), "plugins:cors:c")

    def test_global_plugin_clears_every_chain(self) -> None:
        """A global plugin change clears every compiled chain (prefix key)."""
        keys = keys_for(
            "plugins", None, {"id": "p", "name": "cors", "api_id": None, "consumer_id": None}
        )
        self.assertEqual(keys, ["plugins:cors", "plugins_chain:*"])

    def test_credential_create_clears_negative_entry(self) -> None:
        """Creating a key-auth credential clears keyauth_credentials:<key> (a cached miss)."""
        keys = keys_for(
            "keyauth_credentials", None, {"id": "k", "key": "secret", "consumer_id": "c"}
        )
        self.assertEqual(keys, ["keyauth_credentials:secret"])

    def test_every_credential_collection(self) -> None:
        """Each plugin-owned collection maps to its SPEC §7.4 key."""
        row = {
            "id": "i",
            "consumer_id": "c",
            "key": "k",
            "username": "u",
            "client_id": "ci",
            "access_token": "t",
        }
        self.assertEqual(keys_for("basicauth_credentials", row, None), ["basicauth_credentials:u"])
        self.assertEqual(keys_for("hmacauth_credentials", row, None), ["hmacauth_credentials:u"])
        self.assertEqual(keys_for("jwt_secrets", row, None), ["jwtauth_credentials:k"])
        self.assertEqual(
            keys_for("oauth2_credentials", row, None),
            ["oauth2_credentials:ci", "oauth2_credentials:i"],
        )
        self.assertEqual(keys_for("oauth2_tokens", row, None), ["oauth2_token:t"])
        self.assertEqual(keys_for("acls", row, None), ["acls:c"])
        self.assertEqual(keys_for("consumers", row, None), ["consumers:i", "acls:i"])
        self.assertEqual(keys_for("nodes", {"name": "n"}, None), [])


class ApplyTests(SynchronousTestCase):
    def test_listener_invalidates_after_change(self) -> None:
        """The DAO listener removes exact keys and prefix keys from the cache."""
        cache = Cache(Clock(task.Clock()))
        for key in ("plugins:cors", "plugins_chain:a", "plugins_chain:b", "consumers:c"):
            cache.set(key, 1)
        listener(cache)(
            "plugins",
            "create",
            None,
            {"id": "p", "name": "cors", "api_id": None, "consumer_id": None},
        )
        self.assertEqual(cache.keys(), ["consumers:c"])
        apply(cache, ["consumers:c"])
        self.assertEqual(len(cache), 0)
