"""Admin transport rules (SPEC §1.1/§1.2): CORS, 404/405/415/413, trailing slashes, errors."""

from __future__ import annotations

from typing import Any

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

from kongtx import SERVER_NAME
from kongtx.admin.resource import error_reply
from kongtx.admin.routes.base import route
from kongtx.errors import (
    ConflictError,
    DatabaseError,
    EntityError,
    ForeignKeyError,
    NotFoundError,
    PluginExistsError,
    SchemaError,
)


class TransportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_options_preflight_before_routing(self) -> None:
        """Any OPTIONS, even on an unknown path, is 204 with the CORS preflight headers."""
        for path in ("/apis", "/nowhere/at/all"):
            response = self.admin.call("OPTIONS", path)
            self.assertEqual(response.status, 204)
            self.assertEqual(response.body, b"")
            self.assertEqual(
                response.headers["access-control-allow-methods"], "GET,HEAD,PUT,PATCH,POST,DELETE"
            )
            self.assertEqual(response.headers["access-control-allow-headers"], "Content-Type")
            self.assertEqual(response.headers["access-control-allow-origin"], "*")

    def test_every_response_allows_any_origin(self) -> None:
        """Access-Control-Allow-Origin: * is on successes and errors alike."""
        for method, path in (("GET", "/"), ("GET", "/nope"), ("DELETE", "/apis"), ("GET", "/apis")):
            response = self.admin.call(method, path)
            self.assertEqual(response.headers["access-control-allow-origin"], "*", path)
            self.assertEqual(response.headers["server"], SERVER_NAME)

    def test_unknown_path_is_404(self) -> None:
        """An unknown path is 404 Not found as JSON."""
        response = self.admin.call("GET", "/nope")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json, {"message": "Not found"})
        self.assertEqual(response.headers["content-type"], "application/json; charset=utf-8")

    def test_undeclared_method_is_405(self) -> None:
        """A declared path with an undeclared method is 405 Method not allowed."""
        for method, path in (
            ("DELETE", "/apis"),
            ("POST", "/status"),
            ("HEAD", "/apis"),
            ("PATCH", "/plugins/enabled"),
            ("TRACE", "/"),
        ):
            response = self.admin.call(method, path, headers={"Content-Type": "application/json"})
            self.assertEqual(response.status, 405, (method, path))
            if method != "HEAD":
                self.assertEqual(response.json, {"message": "Method not allowed"})

    def test_trailing_slash(self) -> None:
        """``/apis/`` is ``/apis`` and ``/status/`` is ``/status``."""
        self.assertEqual(self.admin.ok("GET", "/apis/"), {"data": [], "total": 0})
        self.assertIn("database", self.admin.ok("GET", "/status/"))

    def test_write_without_content_type_is_415(self) -> None:
        """POST/PUT/PATCH without Content-Type are 415 with an empty body."""
        self.admin.consumer("bob")
        for method, path in (("POST", "/apis"), ("PUT", "/consumers"), ("PATCH", "/consumers/bob")):
            response = self.admin.call(method, path, data=b"username=x")
            self.assertEqual(response.status, 415, (method, path))
            self.assertEqual(response.body, b"")

    def test_bad_json_is_400(self) -> None:
        """A JSON Content-Type with an unparsable body is 400 Cannot parse JSON body."""
        response = self.admin.call(
            "POST", "/consumers", data=b"{", headers={"Content-Type": "application/json"}
        )
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json, {"message": "Cannot parse JSON body"})

    def test_get_ignores_bodies(self) -> None:
        """GET never reads the body, bad JSON included."""
        response = self.admin.call(
            "GET", "/consumers", data=b"{", headers={"Content-Type": "application/json"}
        )
        self.assertEqual(response.status, 200)

    def test_body_over_10mb_is_413(self) -> None:
        """A body over 10 MB is 413 and nothing is written."""
        before = self.admin.snapshot()
        big = b"username=" + b"x" * (10 * 1024 * 1024)
        response = self.admin.call(
            "POST",
            "/consumers",
            data=big,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(response.status, 413)
        self.assertEqual(self.admin.snapshot(), before)

    def test_robots(self) -> None:
        """/robots.txt disallows everything."""
        response = self.admin.call("GET", "/robots.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"User-agent: *\nDisallow: /")

    def test_unexpected_error_is_fixed_500(self) -> None:
        """A bug inside a handler is 500 An unexpected error occurred, with no detail."""

        async def broken(*args: Any, **kw: Any) -> Any:
            raise KeyError("internal detail")

        self.admin.dao.find_page = broken  # type: ignore[method-assign]
        events: list[dict[str, Any]] = []
        self.admin.resource.log = type(self.admin.resource.log)(observer=events.append)
        response = self.admin.call("GET", "/apis")
        self.assertEqual(response.status, 500)
        self.assertEqual(response.json, {"message": "An unexpected error occurred"})
        self.assertNotIn(b"internal detail", response.body)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)

    def test_datastore_down_is_503(self) -> None:
        """When the store is unreachable reads and writes answer 503."""
        self.admin.store.available = False
        for method, path, kw in (
            ("GET", "/apis", {}),
            ("POST", "/consumers", {"json_body": {"username": "x"}}),
            ("GET", "/consumers/bob", {}),
        ):
            response = self.admin.call(method, path, **kw)
            self.assertEqual(response.status, 503, path)
            self.assertEqual(response.json, {"message": "The datastore is unavailable"})

    def test_percent_encoded_segments(self) -> None:
        """Path captures are percent-decoded before the lookup."""
        self.admin.consumer("a b@c")
        self.assertEqual(self.admin.ok("GET", "/consumers/a%20b%40c")["username"], "a b@c")


class ErrorMappingTests(SynchronousTestCase):
    def test_dao_errors(self) -> None:
        """Each DAO error maps to SPEC §1.2's status and body."""
        cases = [
            (SchemaError({"config.minute": "bad"}), 400, {"config.minute": "bad"}),
            (EntityError("No consumer"), 400, {"message": "No consumer"}),
            (ConflictError("name", "x"), 409, {"name": "already exists with value 'x'"}),
            (ConflictError("enabled", True), 409, {"enabled": "already exists with value 'true'"}),
            (PluginExistsError(), 409, None),
            (ForeignKeyError("api_id", "u"), 404, {"api_id": "does not exist with value 'u'"}),
            (NotFoundError(), 404, {"message": "Not found"}),
            (DatabaseError(), 503, {"message": "The datastore is unavailable"}),
        ]
        for error, status, body in cases:
            reply = error_reply(error)
            assert reply is not None
            self.assertEqual((reply.status, reply.body), (status, body), error)

    def test_other_errors_are_not_mapped(self) -> None:
        """Anything that is not a refusal is left to the 500 path."""
        self.assertIsNone(error_reply(RuntimeError("x")))

    def test_route_templates(self) -> None:
        """A template captures whole segments only and decodes them."""
        r = route("/apis/{api}/plugins/{id}")
        self.assertEqual(r.match("/apis/a%2Fb/plugins/1"), {"api": "a/b", "id": "1"})
        self.assertIsNone(r.match("/apis/a/b/plugins/1"))
        self.assertIsNone(r.match("/apis/a/plugins/1/x"))


class CancellationTests(SynchronousTestCase):
    def test_reads_cancellable_writes_not(self) -> None:
        """A disconnect may cancel a GET, never a write (its invalidation must run)."""
        admin = AdminHarness(self)

        class Req:
            def __init__(self, method: bytes) -> None:
                self.method = method

        resource: Any = admin.resource
        self.assertTrue(resource.is_cancellable(Req(b"GET")))
        for method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
            self.assertFalse(resource.is_cancellable(Req(method)), method)
