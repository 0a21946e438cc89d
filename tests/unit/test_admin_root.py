"""GET /, /status, /cluster and /cache."""

from __future__ import annotations

import platform

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

from kongtx.store.tables import TABLES


class IndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_index(self) -> None:
        """GET / describes the node: version, hostname, plugins, configuration."""
        api = self.admin.api("one")
        self.admin.plugin("key-auth", api_id=api["id"])
        self.admin.plugin("cors")
        self.admin.plugin("cors", api_id=api["id"])
        body = self.admin.ok("GET", "/")
        self.assertEqual(body["tagline"], "Welcome to kong")
        self.assertEqual(body["version"], "0.9.9")
        self.assertEqual(body["hostname"], "host-a")
        self.assertEqual(set(body["timers"]), {"running", "pending"})
        self.assertEqual(
            body["plugins"]["available_on_server"],
            {name: True for name in self.admin.registry.names()},
        )
        self.assertEqual(body["plugins"]["enabled_in_cluster"], ["cors", "key-auth"])
        self.assertEqual(body["lua_version"], f"Python {platform.python_version()}")
        self.assertEqual(body["configuration"], self.admin.config.to_dict(mask_secrets=True))
        self.assertEqual(body["prng_seeds"], {})

    def test_secrets_are_masked(self) -> None:
        """Passwords in the configuration shown by GET / are masked."""
        body = self.admin.ok("GET", "/")
        for key in ("pg_password", "cassandra_password", "cluster_encrypt_key"):
            if key in body["configuration"]:
                self.assertEqual(body["configuration"][key], "******")

    def test_status(self) -> None:
        """GET /status gives the server counters and one row count per collection."""
        self.admin.api("one")
        self.admin.consumer("a")
        self.admin.consumer("b")
        body = self.admin.ok("GET", "/status")
        self.assertEqual(body["server"], self.admin.node.server_stats())
        self.assertEqual(body["database"]["apis"], 1)
        self.assertEqual(body["database"]["consumers"], 2)
        self.assertEqual(body["database"]["plugins"], 0)
        for name in ("nodes", "keyauth_credentials", "oauth2_tokens", "acls"):
            self.assertEqual(body["database"][name], 0, name)
        self.assertEqual(set(body["database"]), set(TABLES))


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_members(self) -> None:
        """GET /cluster lists the node's members; ?status= filters them."""
        body = self.admin.ok("GET", "/cluster")
        self.assertEqual(body, {"data": self.admin.node.member_list, "total": 2})
        body = self.admin.ok("GET", "/cluster?status=failed")
        self.assertEqual([m["name"] for m in body["data"]], ["node-b"])
        self.assertEqual(body["total"], 1)

    def test_join(self) -> None:
        """POST /cluster joins the address; 200 with an empty body."""
        response = self.admin.call("POST", "/cluster", form={"address": "10.0.0.9:7946"})
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(self.admin.node.joined, ["10.0.0.9:7946"])

    def test_join_needs_address(self) -> None:
        """POST /cluster without an address is 400 Missing node "address"."""
        self.assertEqual(
            self.admin.ok("POST", "/cluster", 400, form={"other": "x"}),
            {"message": 'Missing node "address"'},
        )
        self.assertEqual(self.admin.node.joined, [])

    def test_join_error(self) -> None:
        """A join the node refuses is 400 with its message."""
        self.admin.node.error = "Error joining the cluster: timeout"
        self.assertEqual(
            self.admin.ok("POST", "/cluster", 400, form={"address": "1.2.3.4:7946"}),
            {"message": "Error joining the cluster: timeout"},
        )

    def test_force_leave(self) -> None:
        """DELETE /cluster takes the name from the body; 200 with an empty body."""
        response = self.admin.call("DELETE", "/cluster", form={"name": "node-b"})
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(self.admin.node.left, ["node-b"])

    def test_force_leave_needs_name_in_body(self) -> None:
        """A name in the query string does not count: 400 Missing node "name"."""
        self.assertEqual(
            self.admin.ok("DELETE", "/cluster?name=node-b", 400),
            {"message": 'Missing node "name"'},
        )
        self.admin.node.error = "Error leaving"
        self.assertEqual(
            self.admin.ok("DELETE", "/cluster", 400, json_body={"name": "x"}),
            {"message": "Error leaving"},
        )


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_get(self) -> None:
        """GET /cache/{key} shows a cached value as JSON, 404 when absent."""
        self.admin.cache.set("consumers:1", {"id": "1", "username": "bob"})
        self.assertEqual(self.admin.ok("GET", "/cache/consumers:1"), {"id": "1", "username": "bob"})
        self.assertEqual(self.admin.ok("GET", "/cache/nope", 404), {"message": "Not found"})

    def test_negative_entry(self) -> None:
        """A cached miss shows as Kong's placeholder {"null":true}."""

        async def miss() -> None:
            return None

        self.admin.run(self.admin.cache.get_or_load("plugins:cors", miss))
        self.assertEqual(self.admin.cache.peek("plugins:cors"), (True, None))
        self.assertEqual(self.admin.ok("GET", "/cache/plugins:cors"), {"null": True})

    def test_unserialisable_value(self) -> None:
        """A value JSON cannot hold is still shown (as text), never a 500."""
        self.admin.cache.set("router", {"index": object(), "hosts": {"a"}})
        body = self.admin.ok("GET", "/cache/router")
        self.assertIsInstance(body["index"], str)
        self.assertEqual(body["hosts"], ["a"])

    def test_delete_key_and_flush(self) -> None:
        """DELETE /cache/{key} drops one entry; DELETE /cache drops them all; both 204."""
        self.admin.cache.set("a", 1)
        self.admin.cache.set("b", 2)
        self.admin.ok("DELETE", "/cache/a", 204)
        self.assertEqual(self.admin.cache.peek("a"), (False, None))
        self.assertEqual(self.admin.cache.peek("b"), (True, 2))
        self.admin.ok("DELETE", "/cache", 204)
        self.assertEqual(len(self.admin.cache), 0)
