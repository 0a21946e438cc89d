"""acl at request time (SPEC §4.4): whitelist, blacklist, X-Consumer-Groups, invalidation."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.acl.handler import Handler
from tests.fakes import FakeContext
from tests.unit.test_plugin_key_auth import AuthWorld, kong_response

FORBIDDEN: tuple[int, Any, dict[str, str]] = (
    403,
    {"message": "You cannot consume this service"},
    {},
)


class AclTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob")
        self.cred = self.world.insert("keyauth_credentials", consumer_id=self.bob["id"], key="k")
        self.admin = self.world.insert("acls", consumer_id=self.bob["id"], group="admin")
        self.world.insert("acls", consumer_id=self.bob["id"], group="dev")

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("acl", **config), self.world.services)

    def authed(self, **headers: str) -> FakeContext:
        ctx = FakeContext(headers=headers)
        ctx.consumer, ctx.credential = self.bob, self.cred
        return ctx

    def test_no_consumer(self) -> None:
        """Without an authenticated consumer: 403 Cannot identify the consumer."""
        ctx = self.world.run(self.handler(whitelist=["admin"]), FakeContext())
        self.assertEqual(
            kong_response(ctx),
            (
                403,
                {
                    "message": "Cannot identify the consumer, add an authentication plugin "
                    "to use the ACL plugin"
                },
                {},
            ),
        )

    def test_ldap_credential_has_no_consumer(self) -> None:
        """An ldap-auth credential (no consumer) cannot be identified either."""
        ctx = FakeContext()
        ctx.credential = {"username": "ldapuser"}
        self.world.run(self.handler(whitelist=["admin"]), ctx)
        self.assertEqual(ctx.response and ctx.response[0], 403)

    def test_whitelist(self) -> None:
        """In the whitelist: passes with X-Consumer-Groups; not in it: 403."""
        ctx = self.world.run(self.handler(whitelist=["admin", "x"]), self.authed())
        self.assertIsNone(ctx.response)
        groups = ctx.headers.get("X-Consumer-Groups") or ""
        self.assertEqual(sorted(groups.split(", ")), ["admin", "dev"])  # datastore order
        ctx = self.world.run(self.handler(whitelist=["ops"]), self.authed())
        self.assertEqual(kong_response(ctx), FORBIDDEN)

    def test_blacklist(self) -> None:
        """Any group in the blacklist: 403; none: passes."""
        self.assertEqual(
            kong_response(self.world.run(self.handler(blacklist=["dev"]), self.authed())), FORBIDDEN
        )
        self.assertIsNone(self.world.run(self.handler(blacklist=["ops"]), self.authed()).response)

    def test_no_groups(self) -> None:
        """A consumer without groups fails a whitelist, passes a blacklist, sends no groups header."""
        alice = self.world.consumer("alice")
        ctx = FakeContext(headers={"X-Consumer-Groups": "admin"})
        ctx.consumer, ctx.credential = alice, {"id": "c", "consumer_id": alice["id"]}
        self.world.run(self.handler(blacklist=["ops"]), ctx)
        self.assertIsNone(ctx.response)
        self.assertIsNone(ctx.headers.get("X-Consumer-Groups"))
        ctx = FakeContext()
        ctx.consumer, ctx.credential = alice, {"id": "c", "consumer_id": alice["id"]}
        self.assertEqual(
            kong_response(self.world.run(self.handler(whitelist=["admin"]), ctx)), FORBIDDEN
        )

    def test_anonymous_consumer(self) -> None:
        """The anonymous consumer (no credential) is checked by its own groups."""
        ctx = FakeContext()
        ctx.consumer = self.bob
        self.assertIsNone(self.world.run(self.handler(whitelist=["dev"]), ctx).response)

    def test_group_removed_applies_at_once(self) -> None:
        """Removing a consumer's group (cached as acls:<consumer_id>) counts on the next request."""
        h = self.handler(whitelist=["admin"])
        self.assertIsNone(self.world.run(h, self.authed()).response)
        ctx = self.authed()
        self.assertIsNone(h.access(ctx))  # cached: no waiting
        self.world.wait(self.world.dao.delete("acls", {"id": self.admin["id"]}))
        self.assertEqual(kong_response(self.world.run(h, self.authed())), FORBIDDEN)
