"""/plugins, /plugins/{id}, /plugins/enabled and /plugins/schema/{name}."""

from __future__ import annotations

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase


class PluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_enabled(self) -> None:
        """/plugins/enabled lists every loaded plugin name as an array."""
        body = self.admin.ok("GET", "/plugins/enabled")
        self.assertEqual(body, {"enabled_plugins": self.admin.registry.names()})
        self.assertIn("key-auth", body["enabled_plugins"])

    def test_schema(self) -> None:
        """/plugins/schema/{name} renders the config schema; unknown names are 404."""
        body = self.admin.ok("GET", "/plugins/schema/key-auth")
        self.assertIn("key_names", body["fields"])
        self.assertEqual(
            self.admin.ok("GET", "/plugins/schema/nope", 404), {"message": "No plugin named 'nope'"}
        )

    def test_global_plugin(self) -> None:
        """POST /plugins without api_id creates a global configuration."""
        plugin = self.admin.ok("POST", "/plugins", 201, form={"name": "cors"})
        self.assertNotIn("api_id", plugin)
        self.assertEqual(self.admin.ok("GET", f"/plugins/{plugin['id']}"), plugin)

    def test_item_ops_by_id_only(self) -> None:
        """/plugins/{id} accepts only uuids: anything else is 400, an unknown uuid 404."""
        plugin = self.admin.plugin("cors")
        self.assertEqual(
            self.admin.ok("GET", "/plugins/cors", 400), {"message": "cors is not a valid uuid"}
        )
        patched = self.admin.ok("PATCH", f"/plugins/{plugin['id']}", form={"enabled": "false"})
        self.assertIs(patched["enabled"], False)
        self.admin.ok("DELETE", f"/plugins/{plugin['id']}", 204)
        self.admin.ok("GET", f"/plugins/{plugin['id']}", 404)

    def test_no_consumer_plugin(self) -> None:
        """A consumer on a no_consumer plugin is 400 with Kong's message."""
        consumer = self.admin.consumer("bob")
        body = self.admin.ok(
            "POST", "/plugins", 400, form={"name": "key-auth", "consumer_id": consumer["id"]}
        )
        self.assertEqual(body, {"message": "No consumer can be configured for that plugin"})

    def test_foreign_key(self) -> None:
        """An api_id naming no API is 404 does not exist with value."""
        missing = "00000000-0000-4000-8000-000000000000"
        self.assertEqual(
            self.admin.ok("POST", "/plugins", 404, form={"name": "cors", "api_id": missing}),
            {"api_id": f"does not exist with value '{missing}'"},
        )

    def test_config_field_error(self) -> None:
        """A bad config value is a 400 keyed config.<field>."""
        body = self.admin.ok(
            "POST", "/plugins", 400, json_body={"name": "rate-limiting", "config": {"minute": "x"}}
        )
        self.assertIn("config.minute", body)

    def test_filters(self) -> None:
        """GET /plugins filters by name and by enabled."""
        self.admin.plugin("cors")
        self.admin.plugin("key-auth", enabled=False)
        page = self.admin.ok("GET", "/plugins?name=cors")
        self.assertEqual([p["name"] for p in page["data"]], ["cors"])
        page = self.admin.ok("GET", "/plugins?enabled=false")
        self.assertEqual([p["name"] for p in page["data"]], ["key-auth"])

    def test_put_needs_id_and_name(self) -> None:
        """PUT /plugins with id but no name is not a replace."""
        plugin = self.admin.plugin("cors")
        response = self.admin.call(
            "PUT", "/plugins", json_body={"id": plugin["id"], "created_at": plugin["created_at"]}
        )
        self.assertNotEqual(response.status, 200, response)
        self.assertEqual(self.admin.ok("GET", f"/plugins/{plugin['id']}"), plugin)


class RenderingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_empty_arrays_render_as_objects(self) -> None:
        """Empty arrays inside a config render as {} (Kong's cjson), as SPEC §1.3 says."""
        response = self.admin.call("POST", "/plugins", form={"name": "request-transformer"})
        self.assertEqual(response.status, 201, response)
        self.assertIn(b'"headers":{}', response.body)
        self.assertEqual(response.json["config"]["remove"]["headers"], {})

    def test_put_unknown_plugin_id_is_404(self) -> None:
        """PUT /plugins with an id and name that match no row is 404 and writes nothing."""
        before = self.admin.snapshot()
        body = {
            "id": "00000000-0000-4000-8000-000000000000",
            "name": "cors",
            "created_at": 1,
        }
        self.assertEqual(
            self.admin.ok("PUT", "/plugins", 404, json_body=body), {"message": "Not found"}
        )
        self.assertEqual(self.admin.snapshot(), before)
