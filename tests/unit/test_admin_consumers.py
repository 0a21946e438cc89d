"""/consumers and /consumers/{username or id}."""

from __future__ import annotations

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase


class ConsumerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_create_and_find(self) -> None:
        """POST creates; GET finds by username or id; missing keys are omitted."""
        consumer = self.admin.ok("POST", "/consumers", 201, form={"username": "bob"})
        self.assertNotIn("custom_id", consumer)
        self.assertEqual(self.admin.ok("GET", "/consumers/bob"), consumer)
        self.assertEqual(self.admin.ok("GET", f"/consumers/{consumer['id']}"), consumer)

    def test_needs_username_or_custom_id(self) -> None:
        """Neither username nor custom_id: both fields get the same 400 message."""
        message = "At least a 'custom_id' or a 'username' must be specified"
        self.assertEqual(
            self.admin.ok("POST", "/consumers", 400, json_body={"custom_id": ""}),
            {"username": message, "custom_id": message},
        )

    def test_duplicate_username(self) -> None:
        """A taken username is 409 already exists with value."""
        self.admin.consumer("bob")
        self.assertEqual(
            self.admin.ok("POST", "/consumers", 409, form={"username": "bob"}),
            {"username": "already exists with value 'bob'"},
        )

    def test_unknown_field(self) -> None:
        """An unknown field is a 400 naming it."""
        self.assertEqual(
            self.admin.ok("POST", "/consumers", 400, json_body={"username": "x", "foo": 1}),
            {"foo": "foo is an unknown field"},
        )

    def test_patch_and_delete(self) -> None:
        """PATCH changes a consumer found by username; DELETE removes it."""
        self.admin.consumer("bob")
        patched = self.admin.ok("PATCH", "/consumers/bob", form={"custom_id": "c1"})
        self.assertEqual(patched["custom_id"], "c1")
        self.admin.ok("DELETE", "/consumers/bob", 204)
        self.admin.ok("GET", "/consumers/bob", 404)

    def test_filters(self) -> None:
        """GET /consumers filters by custom_id and username."""
        self.admin.consumer("a", custom_id="x")
        self.admin.consumer("b", custom_id="y")
        page = self.admin.ok("GET", "/consumers?custom_id=y")
        self.assertEqual([c["username"] for c in page["data"]], ["b"])

    def test_put_replaces(self) -> None:
        """PUT with id replaces; custom_id not sent becomes absent."""
        consumer = self.admin.consumer("a", custom_id="x")
        body = {"id": consumer["id"], "created_at": consumer["created_at"], "username": "a2"}
        replaced = self.admin.ok("PUT", "/consumers", json_body=body)
        self.assertEqual(replaced["username"], "a2")
        self.assertNotIn("custom_id", replaced)

    def test_put_bad_id(self) -> None:
        """PUT with an id that is not a uuid is 400 and writes nothing."""
        before = self.admin.snapshot()
        body = self.admin.ok("PUT", "/consumers", 400, json_body={"id": "zz", "username": "a"})
        self.assertEqual(body, {"id": "zz is not a valid uuid"})
        self.assertEqual(self.admin.snapshot(), before)
