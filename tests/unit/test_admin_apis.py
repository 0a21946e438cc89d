"""/apis and /apis/{api}/plugins: CRUD, PUT semantics, pagination, filters, errors."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MISSING = "00000000-0000-4000-8000-000000000000"


class ApiCrudTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_post_form_creates(self) -> None:
        """POST /apis with a form is 201 with the whole entity, ids and ms timestamps generated."""
        api = self.admin.ok(
            "POST",
            "/apis",
            201,
            form={"request_host": "mockbin.com", "upstream_url": "http://mockbin.com"},
        )
        self.assertRegex(api["id"], UUID)
        self.assertEqual(api["created_at"], 1_480_000_000_000)
        self.assertEqual(api["name"], "mockbin.com")
        self.assertIs(api["strip_request_path"], False)
        self.assertIs(api["preserve_host"], False)
        self.assertNotIn("request_path", api)

    def test_post_json_with_dotted_keys_is_the_same(self) -> None:
        """A JSON body creates the same entity as a form."""
        api = self.admin.ok(
            "POST",
            "/apis",
            201,
            json_body={"request_path": "/a/b", "upstream_url": "http://x.test"},
        )
        self.assertEqual(api["name"], "a-b")

    def test_get_by_name_or_id(self) -> None:
        """GET /apis/{name or id} finds the API either way; 404 otherwise."""
        api = self.admin.api("one")
        self.assertEqual(self.admin.ok("GET", "/apis/one"), api)
        self.assertEqual(self.admin.ok("GET", f"/apis/{api['id']}"), api)
        self.assertEqual(self.admin.ok("GET", f"/apis/{api['id'].upper()}"), api)
        self.assertEqual(self.admin.ok("GET", "/apis/two", 404), {"message": "Not found"})
        self.assertEqual(self.admin.ok("GET", f"/apis/{MISSING}", 404), {"message": "Not found"})

    def test_patch(self) -> None:
        """PATCH merges the body into the row and returns it; unknown API is 404."""
        self.admin.api("one")
        patched = self.admin.ok("PATCH", "/apis/one", form={"request_path": "/p"})
        self.assertEqual(patched["request_path"], "/p")
        self.assertEqual(patched["request_host"], "one.com")
        self.assertEqual(self.admin.ok("GET", "/apis/one")["request_path"], "/p")
        self.admin.ok("PATCH", "/apis/nope", 404, form={"name": "x"})

    def test_patch_empty_body(self) -> None:
        """PATCH with nothing to change is 400 empty body."""
        self.admin.api("one")
        self.assertEqual(
            self.admin.ok("PATCH", "/apis/one", 400, json_body={}), {"message": "empty body"}
        )

    def test_delete(self) -> None:
        """DELETE is 204 with an empty body, then the API is gone (404)."""
        self.admin.api("one")
        response = self.admin.call("DELETE", "/apis/one")
        self.assertEqual((response.status, response.body), (204, b""))
        self.admin.ok("DELETE", "/apis/one", 404)
        self.admin.ok("GET", "/apis/one", 404)

    def test_delete_cascades_to_plugins(self) -> None:
        """Deleting an API deletes its plugin configurations."""
        api = self.admin.api("one")
        self.admin.plugin("key-auth", api_id=api["id"])
        self.admin.ok("DELETE", "/apis/one", 204)
        self.assertEqual(self.admin.ok("GET", "/plugins"), {"data": [], "total": 0})

    def test_validation_errors(self) -> None:
        """Field errors are a 400 map keyed by field."""
        body = self.admin.ok(
            "POST", "/apis", 400, json_body={"request_host": "a.com", "upstream_url": "nope"}
        )
        self.assertEqual(body, {"upstream_url": "upstream_url is not a url"})
        body = self.admin.ok("POST", "/apis", 400, json_body={"upstream_url": "http://x.test"})
        message = "At least a 'request_host' or a 'request_path' must be specified"
        self.assertEqual(body, {"request_host": message, "request_path": message})

    def test_conflict(self) -> None:
        """A second API with the same name is 409 already exists."""
        self.admin.api("one")
        body = self.admin.ok(
            "POST",
            "/apis",
            409,
            json_body={"name": "one", "request_host": "z.com", "upstream_url": "http://x.test"},
        )
        self.assertEqual(body, {"name": "already exists with value 'one'"})


class ApiPutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_put_without_id_creates(self) -> None:
        """PUT without the primary key behaves like POST: 201."""
        api = self.admin.ok(
            "PUT",
            "/apis",
            201,
            json_body={"request_host": "a.com", "upstream_url": "http://x.test"},
        )
        self.assertRegex(api["id"], UUID)

    def test_put_with_id_replaces(self) -> None:
        """PUT with id and created_at replaces the row: unsent fields become null (omitted)."""
        api = self.admin.api("one", request_path="/p")
        body = {
            "id": api["id"],
            "created_at": api["created_at"],
            "name": "one",
            "request_host": "new.com",
            "upstream_url": "http://x.test",
        }
        replaced = self.admin.ok("PUT", "/apis", 200, json_body=body)
        self.assertEqual(replaced["request_host"], "new.com")
        self.assertNotIn("request_path", replaced)
        self.assertEqual(self.admin.ok("GET", "/apis/one"), replaced)

    def test_put_requires_created_at(self) -> None:
        """A full replace without created_at is 400 created_at is required."""
        api = self.admin.api("one")
        body = {"id": api["id"], "request_host": "a.com", "upstream_url": "http://x.test"}
        self.assertEqual(
            self.admin.ok("PUT", "/apis", 400, json_body=body),
            {"created_at": "created_at is required"},
        )

    def test_put_unknown_id_is_404(self) -> None:
        """PUT with an id that matches no row is 404 Not found and creates nothing (kongtx)."""
        before = self.admin.snapshot()
        body = {
            "id": MISSING,
            "created_at": 1,
            "request_host": "a.com",
            "upstream_url": "http://x.test",
        }
        self.assertEqual(
            self.admin.ok("PUT", "/apis", 404, json_body=body), {"message": "Not found"}
        )
        self.assertEqual(self.admin.snapshot(), before)


class PaginationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.ids = {self.admin.api(f"api{i}")["id"] for i in range(5)}

    def test_pages(self) -> None:
        """size splits the list; offset/next appear only while another page exists."""
        seen: set[str] = set()
        page = self.admin.ok("GET", "/apis?size=2")
        pages = 1
        while True:
            self.assertEqual(page["total"], 5)
            seen.update(a["id"] for a in page["data"])
            if "offset" not in page:
                self.assertNotIn("next", page)
                break
            url = urlsplit(page["next"])
            self.assertEqual(
                (url.scheme, url.netloc, url.path), ("http", "localhost:8001", "/apis")
            )
            query = parse_qs(url.query)
            self.assertEqual(query, {"offset": [page["offset"]], "size": ["2"]})
            page = self.admin.ok("GET", f"/apis?{url.query}")
            pages += 1
        self.assertEqual(seen, self.ids)
        self.assertEqual(pages, 3)

    def test_default_and_bad_size(self) -> None:
        """Without size, or with a non-numeric one, a page holds up to 100 rows."""
        for query in ("", "?size=abc", "?size=-3"):
            page = self.admin.ok("GET", f"/apis{query}")
            self.assertEqual(len(page["data"]), 5)
            self.assertNotIn("offset", page)

    def test_empty_list(self) -> None:
        """An empty collection is exactly {"data":[],"total":0}."""
        response = self.admin.call("GET", "/consumers")
        self.assertEqual(response.body, b'{"data":[],"total":0}')

    def test_filters(self) -> None:
        """Query arguments are equality filters; total counts the filtered rows."""
        page = self.admin.ok("GET", "/apis?name=api3")
        self.assertEqual([a["name"] for a in page["data"]], ["api3"])
        self.assertEqual(page["total"], 1)
        page = self.admin.ok("GET", "/apis?request_host=api1.com&name=api1")
        self.assertEqual(page["total"], 1)
        self.assertEqual(self.admin.ok("GET", "/apis?name=zzz"), {"data": [], "total": 0})

    def test_unknown_filter(self) -> None:
        """A filter on an unknown column is 400 unknown field."""
        self.assertEqual(self.admin.ok("GET", "/apis?foo=bar", 400), {"foo": "unknown field"})

    def test_bad_uuid_filter(self) -> None:
        """A uuid filter that is not a uuid is 400 <value> is not a valid uuid."""
        self.assertEqual(
            self.admin.ok("GET", "/apis?id=xyz", 400), {"id": "xyz is not a valid uuid"}
        )


class ApiPluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.api = self.admin.api("one")
        self.other = self.admin.api("two")

    def test_post_takes_api_id_from_path(self) -> None:
        """POST /apis/{api}/plugins sets api_id from the path, overriding the body."""
        plugin = self.admin.ok(
            "POST",
            "/apis/one/plugins",
            201,
            form={"name": "key-auth", "api_id": self.other["id"], "config.key_names": "k1,k2"},
        )
        self.assertEqual(plugin["api_id"], self.api["id"])
        self.assertEqual(plugin["config"]["key_names"], ["k1", "k2"])
        self.assertIs(plugin["enabled"], True)

    def test_list_is_scoped_to_the_api(self) -> None:
        """GET /apis/{api}/plugins lists only that API's plugins, with extra filters."""
        self.admin.plugin("key-auth", api_id=self.api["id"])
        self.admin.plugin("cors", api_id=self.api["id"])
        self.admin.plugin("key-auth", api_id=self.other["id"])
        self.admin.plugin("cors")
        page = self.admin.ok("GET", "/apis/one/plugins")
        self.assertEqual(page["total"], 2)
        self.assertEqual({p["api_id"] for p in page["data"]}, {self.api["id"]})
        page = self.admin.ok("GET", "/apis/one/plugins?name=cors")
        self.assertEqual([p["name"] for p in page["data"]], ["cors"])

    def test_item_must_belong_to_the_api(self) -> None:
        """A plugin of another API is 404 under this one."""
        mine = self.admin.plugin("key-auth", api_id=self.api["id"])
        theirs = self.admin.plugin("key-auth", api_id=self.other["id"])
        self.assertEqual(self.admin.ok("GET", f"/apis/one/plugins/{mine['id']}")["id"], mine["id"])
        self.admin.ok("GET", f"/apis/one/plugins/{theirs['id']}", 404)
        self.admin.ok("DELETE", f"/apis/one/plugins/{theirs['id']}", 404)
        self.admin.ok("DELETE", f"/apis/one/plugins/{mine['id']}", 204)

    def test_item_bad_uuid(self) -> None:
        """A plugin id that is not a uuid is 400 <v> is not a valid uuid."""
        for method in ("GET", "PATCH", "DELETE"):
            body = self.admin.ok(
                method, "/apis/one/plugins/nope", 400, json_body={"enabled": False}
            )
            self.assertEqual(body, {"message": "nope is not a valid uuid"})

    def test_patch_config_merges(self) -> None:
        """PATCH of config.x keeps the other config keys."""
        plugin = self.admin.plugin(
            "rate-limiting", api_id=self.api["id"], config={"minute": 10, "hour": 100}
        )
        patched = self.admin.ok(
            "PATCH", f"/apis/one/plugins/{plugin['id']}", form={"config.minute": "20"}
        )
        self.assertEqual(patched["config"]["minute"], 20)
        self.assertEqual(patched["config"]["hour"], 100)

    def test_duplicate_plugin_is_409_empty(self) -> None:
        """Configuring the same plugin twice on an API is 409 with an empty body."""
        self.admin.plugin("key-auth", api_id=self.api["id"])
        response = self.admin.call("POST", "/apis/one/plugins", form={"name": "key-auth"})
        self.assertEqual((response.status, response.body), (409, b""))

    def test_unknown_plugin(self) -> None:
        """An unknown plugin name is 400 on config."""
        self.assertEqual(
            self.admin.ok("POST", "/apis/one/plugins", 400, form={"name": "nope"}),
            {"config": 'Plugin "nope" not found'},
        )

    def test_unknown_api_is_404(self) -> None:
        """Plugin routes under an unknown API are 404 Not found."""
        self.admin.ok("GET", "/apis/zzz/plugins", 404)
        self.admin.ok("POST", "/apis/zzz/plugins", 404, form={"name": "key-auth"})

    def test_put_updates_with_id_and_name(self) -> None:
        """PUT /apis/{api}/plugins with id and name replaces the configuration."""
        plugin = self.admin.plugin("key-auth", api_id=self.api["id"])
        body = {
            "id": plugin["id"],
            "name": "key-auth",
            "created_at": plugin["created_at"],
            "enabled": False,
        }
        updated = self.admin.ok("PUT", "/apis/one/plugins", 200, json_body=body)
        self.assertIs(updated["enabled"], False)
        self.assertEqual(updated["api_id"], self.api["id"])


class EncodingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_multipart_create(self) -> None:
        """POST /apis with multipart/form-data takes each part's content as the value."""
        body = (
            b'--zz\r\nContent-Disposition: form-data; name="request_host"\r\n\r\nmp.com\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="upstream_url"\r\n\r\nhttp://up.test\r\n'
            b"--zz--\r\n"
        )
        api = self.admin.ok(
            "POST",
            "/apis",
            201,
            data=body,
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        )
        self.assertEqual((api["name"], api["upstream_url"]), ("mp.com", "http://up.test"))

    def test_query_arguments_are_params(self) -> None:
        """As in Lapis, query arguments of a write are params too (the body wins)."""
        api = self.admin.ok(
            "POST",
            "/apis?request_host=q.com&upstream_url=http://q.test",
            201,
            json_body={"upstream_url": "http://body.test"},
        )
        self.assertEqual((api["request_host"], api["upstream_url"]), ("q.com", "http://body.test"))

    def test_dotted_and_boolean_strings(self) -> None:
        """Form strings reach the schema, which reads "true" and trims values."""
        api = self.admin.ok(
            "POST",
            "/apis",
            201,
            form={
                "request_path": "/x",
                "upstream_url": "http://x.test",
                "strip_request_path": "TRUE",
            },
        )
        self.assertIs(api["strip_request_path"], True)
