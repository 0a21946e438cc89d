"""Consumer-scoped credential routes (SPEC §1.6), /oauth2 and /oauth2_tokens."""

from __future__ import annotations

import re

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

HEX32 = re.compile(r"^[0-9a-f]{32}$")


class CredentialRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.bob = self.admin.consumer("bob")
        self.eve = self.admin.consumer("eve")

    def test_every_credential_plugin_has_routes(self) -> None:
        """Each registry credential route answers its collection GET under a consumer."""
        paths = [r.path for r in self.admin.registry.credential_routes()]
        self.assertEqual(
            sorted(paths), ["acls", "basic-auth", "hmac-auth", "jwt", "key-auth", "oauth2"]
        )
        for path in paths:
            self.assertEqual(
                self.admin.ok("GET", f"/consumers/bob/{path}"), {"data": [], "total": 0}, path
            )

    def test_key_auth_lifecycle(self) -> None:
        """key-auth: generated key, lookup by key or id, patch, delete."""
        cred = self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={})
        self.assertRegex(cred["key"], HEX32)
        self.assertEqual(cred["consumer_id"], self.bob["id"])
        self.assertEqual(self.admin.ok("GET", f"/consumers/bob/key-auth/{cred['key']}"), cred)
        self.assertEqual(self.admin.ok("GET", f"/consumers/bob/key-auth/{cred['id']}"), cred)
        patched = self.admin.ok(
            "PATCH", f"/consumers/bob/key-auth/{cred['id']}", form={"key": "newkey"}
        )
        self.assertEqual(patched["key"], "newkey")
        self.admin.ok("DELETE", "/consumers/bob/key-auth/newkey", 204)
        self.admin.ok("GET", "/consumers/bob/key-auth/newkey", 404)

    def test_consumer_id_comes_from_the_path(self) -> None:
        """POST injects the path's consumer_id, whatever the body says."""
        cred = self.admin.ok(
            "POST",
            "/consumers/bob/key-auth",
            201,
            json_body={"key": "k1", "consumer_id": self.eve["id"]},
        )
        self.assertEqual(cred["consumer_id"], self.bob["id"])

    def test_credentials_are_scoped_to_their_consumer(self) -> None:
        """Another consumer's credential is 404 under this consumer, in lists too."""
        self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={"key": "bobkey"})
        self.admin.ok("GET", "/consumers/eve/key-auth/bobkey", 404)
        self.admin.ok("DELETE", "/consumers/eve/key-auth/bobkey", 404)
        self.assertEqual(self.admin.ok("GET", "/consumers/eve/key-auth")["total"], 0)
        self.assertEqual(self.admin.ok("GET", "/consumers/bob/key-auth")["total"], 1)

    def test_unknown_consumer_is_404(self) -> None:
        """The consumer is resolved first: an unknown one is 404 on every method."""
        for method in ("GET", "POST", "PUT"):
            self.admin.ok(method, "/consumers/zed/key-auth", 404, form={"key": "x"})
        self.admin.ok("GET", "/consumers/zed/key-auth/x", 404)

    def test_patch_empty_body(self) -> None:
        """PATCH with an empty body is 400 empty body, even though consumer_id is implied."""
        cred = self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={"key": "k"})
        body = self.admin.ok("PATCH", f"/consumers/bob/key-auth/{cred['id']}", 400, json_body={})
        self.assertEqual(body, {"message": "empty body"})

    def test_duplicate_key_is_409(self) -> None:
        """A key already used by anyone is 409."""
        self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={"key": "same"})
        self.assertEqual(
            self.admin.ok("POST", "/consumers/eve/key-auth", 409, form={"key": "same"}),
            {"key": "already exists with value 'same'"},
        )

    def test_basic_auth_by_username(self) -> None:
        """basic-auth items are found by username; the password is never stored in clear."""
        cred = self.admin.ok(
            "POST", "/consumers/bob/basic-auth", 201, form={"username": "u1", "password": "pw"}
        )
        self.assertNotEqual(cred.get("password"), "pw")
        self.assertEqual(self.admin.ok("GET", "/consumers/bob/basic-auth/u1")["id"], cred["id"])
        self.assertEqual(
            self.admin.ok("POST", "/consumers/bob/basic-auth", 400, form={"password": "x"}),
            {"username": "username is required"},
        )

    def test_acls_by_group(self) -> None:
        """acls are found by group; the same group twice for a consumer is 400."""
        self.admin.ok("POST", "/consumers/bob/acls", 201, form={"group": "admins"})
        self.admin.ok("POST", "/consumers/eve/acls", 201, form={"group": "admins"})
        self.assertEqual(self.admin.ok("GET", "/consumers/bob/acls/admins")["group"], "admins")
        self.assertEqual(
            self.admin.ok("POST", "/consumers/bob/acls", 400, form={"group": "admins"}),
            {"group": "ACL group already exist for this consumer"},
        )

    def test_put_replaces_credential(self) -> None:
        """PUT with id replaces a credential under the path's consumer."""
        cred = self.admin.ok("POST", "/consumers/bob/hmac-auth", 201, form={"username": "h"})
        body = {
            "id": cred["id"],
            "created_at": cred["created_at"],
            "username": "h2",
        }
        replaced = self.admin.ok("PUT", "/consumers/bob/hmac-auth", json_body=body)
        self.assertEqual(replaced["username"], "h2")
        self.assertEqual(replaced["consumer_id"], self.bob["id"])

    def test_jwt_defaults(self) -> None:
        """jwt credentials get a generated key and secret and HS256."""
        cred = self.admin.ok("POST", "/consumers/bob/jwt", 201, form={})
        self.assertRegex(cred["key"], HEX32)
        self.assertRegex(cred["secret"], HEX32)
        self.assertEqual(cred["algorithm"], "HS256")

    def test_deleting_consumer_cascades(self) -> None:
        """Deleting the consumer deletes its credentials."""
        self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={"key": "k"})
        self.admin.ok("DELETE", "/consumers/bob", 204)
        self.assertEqual(self.admin.run(self.admin.store.select("keyauth_credentials", {})), [])


class OAuth2RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.admin.consumer("bob")
        self.app = self.admin.ok(
            "POST",
            "/consumers/bob/oauth2",
            201,
            form={"name": "app", "redirect_uri": ["http://a.test/cb", "http://b.test/cb"]},
        )

    def test_application(self) -> None:
        """An oauth2 application gets client_id/secret and keeps its redirect_uri array."""
        self.assertEqual(self.app["redirect_uri"], ["http://a.test/cb", "http://b.test/cb"])
        found = self.admin.ok("GET", f"/consumers/bob/oauth2/{self.app['client_id']}")
        self.assertEqual(found["id"], self.app["id"])

    def test_indexed_array_fields(self) -> None:
        """redirect_uri[2]=..&redirect_uri[1]=.. is an array ordered by index."""
        app = self.admin.ok(
            "POST",
            "/consumers/bob/oauth2",
            201,
            data=b"name=x&redirect_uri[2]=http%3A%2F%2Fb.test&redirect_uri[1]=http%3A%2F%2Fa.test",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(app["redirect_uri"], ["http://a.test", "http://b.test"])

    def test_comma_separated_array(self) -> None:
        """One comma-separated string is split into an array by the schema."""
        app = self.admin.ok(
            "POST",
            "/consumers/bob/oauth2",
            201,
            form={"name": "x", "redirect_uri": "http://a.test, http://b.test"},
        )
        self.assertEqual(app["redirect_uri"], ["http://a.test", "http://b.test"])

    def test_all_applications(self) -> None:
        """GET /oauth2 lists every application of every consumer."""
        self.admin.consumer("eve")
        self.admin.ok(
            "POST",
            "/consumers/eve/oauth2",
            201,
            form={"name": "x", "redirect_uri": "http://c.test"},
        )
        self.assertEqual(self.admin.ok("GET", "/oauth2")["total"], 2)
        self.admin.ok("POST", "/oauth2", 405, form={"name": "x"})

    def test_tokens(self) -> None:
        """/oauth2_tokens creates, finds by access_token or id, patches and deletes tokens."""
        token = self.admin.ok(
            "POST",
            "/oauth2_tokens",
            201,
            form={"credential_id": self.app["id"], "expires_in": "3600"},
        )
        self.assertEqual(token["token_type"], "bearer")
        self.assertEqual(self.admin.ok("GET", f"/oauth2_tokens/{token['access_token']}"), token)
        patched = self.admin.ok("PATCH", f"/oauth2_tokens/{token['id']}", form={"scope": "email"})
        self.assertEqual(patched["scope"], "email")
        self.assertEqual(self.admin.ok("GET", "/oauth2_tokens")["total"], 1)
        self.admin.ok("DELETE", f"/oauth2_tokens/{token['access_token']}", 204)
        self.admin.ok("GET", f"/oauth2_tokens/{token['id']}", 404)

    def test_token_needs_existing_credential(self) -> None:
        """A token for an unknown application is 404 does not exist."""
        missing = "00000000-0000-4000-8000-000000000000"
        body = self.admin.ok(
            "POST", "/oauth2_tokens", 404, form={"credential_id": missing, "expires_in": "10"}
        )
        self.assertEqual(body, {"credential_id": f"does not exist with value '{missing}'"})
