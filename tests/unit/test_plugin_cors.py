"""The cors plugin at request time (SPEC §4.4)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.cors.handler import Handler, lua_number
from tests.fakes import FakeContext

DEFAULTS: dict[str, Any] = {"credentials": False, "preflight_continue": False}


def handler(**config: Any) -> Handler:
    return Handler({**DEFAULTS, **config})


class PreflightTests(SynchronousTestCase):
    def preflight(self, h: Handler, **headers: str) -> FakeContext:
        ctx = FakeContext(method="OPTIONS", headers=headers)
        self.assertIsNone(h.access(ctx))
        return ctx

    def test_default_preflight(self) -> None:
        """A default config answers OPTIONS with 204, origin *, echoed request headers, default methods."""
        ctx = self.preflight(handler(), **{"Access-Control-Request-Headers": "X-A, X-B"})
        self.assertEqual(
            ctx.response,
            (
                204,
                None,
                {
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Headers": "X-A, X-B",
                    "Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE",
                },
            ),
        )

    def test_no_request_headers_gives_empty_allow_headers(self) -> None:
        """Without Access-Control-Request-Headers the allow list is empty."""
        ctx = self.preflight(handler())
        assert ctx.response is not None
        self.assertEqual(ctx.response[2]["Access-Control-Allow-Headers"], "")

    def test_several_request_headers_lines_echoed(self) -> None:
        """Several Access-Control-Request-Headers lines are echoed as one list."""
        h = handler()
        ctx = FakeContext(
            method="OPTIONS",
            headers=[
                ("Access-Control-Request-Headers", "X-A"),
                ("Access-Control-Request-Headers", "X-B"),
            ],
        )
        h.access(ctx)
        assert ctx.response is not None
        self.assertEqual(ctx.response[2]["Access-Control-Allow-Headers"], "X-A, X-B")

    def test_full_preflight(self) -> None:
        """Configured origin, credentials, headers, methods and max_age all appear, Vary: Origin too."""
        h = handler(
            origin="http://example.com",
            credentials=True,
            headers=["X-A", "X-B"],
            methods=["GET", "POST"],
            max_age=3600,
            exposed_headers=["X-Exposed"],
        )
        ctx = self.preflight(h, **{"Access-Control-Request-Headers": "X-Other"})
        assert ctx.response is not None
        self.assertEqual(
            ctx.response[2],
            {
                "Access-Control-Allow-Origin": "http://example.com",
                "Vary": "Origin",
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Headers": "X-A,X-B",
                "Access-Control-Allow-Methods": "GET,POST",
                "Access-Control-Max-Age": "3600",
            },
        )

    def test_preflight_gets_no_response_headers_twice(self) -> None:
        """header_filter on the answered preflight adds nothing more (no Expose-Headers)."""
        h = handler(exposed_headers=["X-Exposed"])
        ctx = self.preflight(h)
        before = ctx.response_headers.items()
        h.header_filter(ctx)
        self.assertEqual(ctx.response_headers.items(), before)
        self.assertNotIn("Access-Control-Expose-Headers", ctx.response_headers)

    def test_preflight_continue(self) -> None:
        """preflight_continue proxies OPTIONS and adds no CORS header to the upstream's answer."""
        h = handler(preflight_continue=True, origin="http://a")
        ctx = self.preflight(h)
        self.assertFalse(ctx.responded)
        h.header_filter(ctx)
        self.assertEqual(ctx.response_headers.items(), [])

    def test_max_age_printed_like_lua(self) -> None:
        """max_age prints as Lua's tostring would (integers without a decimal point)."""
        self.assertEqual(lua_number(3600.0), "3600")
        self.assertEqual(lua_number(1.5), "1.5")
        self.assertEqual(lua_number(10), "10")
        ctx = self.preflight(handler(max_age=7200.0))
        assert ctx.response is not None
        self.assertEqual(ctx.response[2]["Access-Control-Max-Age"], "7200")

    def test_empty_arrays_join_to_empty_values(self) -> None:
        """An explicitly empty headers/methods array gives an empty header, as Kong's concat did."""
        ctx = self.preflight(handler(headers=[], methods=[]))
        assert ctx.response is not None
        self.assertEqual(ctx.response[2]["Access-Control-Allow-Headers"], "")
        self.assertEqual(ctx.response[2]["Access-Control-Allow-Methods"], "")


class ResponseTests(SynchronousTestCase):
    def test_simple_request(self) -> None:
        """Other methods are proxied; the response gets origin, Vary, credentials and exposed headers."""
        h = handler(origin="http://example.com", credentials=True, exposed_headers=["X-A", "X-B"])
        ctx = FakeContext(method="GET")
        ctx.response_headers.set("Vary", "Accept-Encoding")
        self.assertIsNone(h.access(ctx))
        self.assertFalse(ctx.responded)
        h.header_filter(ctx)
        self.assertEqual(
            ctx.response_headers.items(),
            [
                ("Vary", "Origin"),
                ("Access-Control-Allow-Origin", "http://example.com"),
                ("Access-Control-Allow-Credentials", "true"),
                ("Access-Control-Expose-Headers", "X-A,X-B"),
            ],
        )

    def test_default_response_headers(self) -> None:
        """Default config: only Access-Control-Allow-Origin: *, no Vary, no credentials."""
        h = handler()
        ctx = FakeContext(method="POST")
        h.access(ctx)
        h.header_filter(ctx)
        self.assertEqual(ctx.response_headers.items(), [("Access-Control-Allow-Origin", "*")])

    def test_rejected_request_still_decorated(self) -> None:
        """A request another plugin rejected after cors ran still gets the CORS headers."""
        h = handler()
        ctx = FakeContext(method="GET")
        h.access(ctx)
        ctx.respond(401, {"message": "Unauthorized"})
        h.header_filter(ctx)
        self.assertEqual(ctx.response_headers.get("Access-Control-Allow-Origin"), "*")
