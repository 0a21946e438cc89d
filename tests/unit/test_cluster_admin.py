"""``POST /cluster/events``: Kong 0.9's event payload invalidates this node's cache."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kongtx.invalidation import ROUTER_KEY
from tests.unit.test_admin_support import AdminHarness


class ClusterEventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_entity_event_invalidates_and_answers_200(self) -> None:
        """An ENTITY_UPDATED for a consumer clears its cache keys (old and re-read row); 200, empty body."""
        consumer = self.admin.ok("POST", "/consumers", 201, json_body={"username": "bob"})
        self.admin.cache.set(f"consumers:{consumer['id']}", {"stale": True})
        self.admin.cache.set(f"acls:{consumer['id']}", [])
        payload = {
            "type": "entity_updated",
            "collection": "consumers",
            "primary_key": ["id"],
            "entity": {"id": consumer["id"], "username": "old"},
        }
        response = self.admin.call("POST", "/cluster/events", json_body=payload)
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertNotIn(f"consumers:{consumer['id']}", self.admin.cache)
        self.assertNotIn(f"acls:{consumer['id']}", self.admin.cache)

    def test_anything_else_is_200_and_changes_nothing(self) -> None:
        """Member events, unknown collections and garbage are accepted and ignored, as Kong did."""
        self.admin.cache.set(ROUTER_KEY, "router")
        for body in (
            {"type": "MEMBER-JOIN", "entity": "node-b 10.0.0.2"},
            {"type": "ENTITY_CREATED", "collection": "nope", "entity": {"id": "x"}},
            {},
        ):
            self.assertEqual(self.admin.call("POST", "/cluster/events", json_body=body).status, 200)
        self.assertIn(ROUTER_KEY, self.admin.cache)
        self.assertEqual(self.admin.call("POST", "/cluster/events/", json_body={}).status, 200)
