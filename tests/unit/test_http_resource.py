"""The async Resource base: one error path, cancellation on disconnect, no late writes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from kongtx import SERVER_NAME
from kongtx.http.resource import DEFERRED_ATTRIBUTE, AsyncResource, HTTPRequest

Handler = Callable[["Resource", HTTPRequest], Awaitable[None]]


class Resource(AsyncResource):
    """A test resource whose handler is a plain async function."""

    default_headers = {b"X-Always": b"yes"}

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=self.events.append)
        self.requests: list[HTTPRequest] = []

    async def handle(self, request: HTTPRequest) -> None:
        self.requests.append(request)
        await self.handler(self, request)


class Connection:
    """A real HTTPChannel on a StringTransport: full HTTP parsing, no socket."""

    def __init__(self, resource: AsyncResource) -> None:
        self.reactor = MemoryReactorClock()
        site = Site(resource, reactor=self.reactor)
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n") -> None:
        self.channel.dataReceived(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        raw = self.transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(100)


class AsyncResourceTests(SynchronousTestCase):
    def test_json_response_headers(self) -> None:
        """A handler's JSON reply carries Kong's Content-Type, Server and the default headers."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            res.respond_json(request, 201, {"a": "é/"})

        conn = Connection(Resource(handler))
        conn.send()
        status, headers, body = conn.response()
        self.assertEqual(status, 201)
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(headers["server"], SERVER_NAME)
        self.assertEqual(headers["x-always"], "yes")
        self.assertEqual(json.loads(body), {"a": "é/"})

    def test_render_stores_the_deferred(self) -> None:
        """render keeps the handler's Deferred on the request and returns NOT_DONE_YET."""
        waiting: Deferred[None] = Deferred()

        async def handler(res: Resource, request: HTTPRequest) -> None:
            await waiting
            res.respond_json(request, 200, {})

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        d = getattr(resource.requests[0], DEFERRED_ATTRIBUTE)
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        self.assertEqual(conn.transport.value(), b"")
        waiting.callback(None)
        self.successResultOf(d)
        self.assertEqual(conn.response()[0], 200)

    def test_exception_becomes_fixed_500(self) -> None:
        """Any exception is a 500 with the fixed message; the traceback is logged, not sent."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            raise ZeroDivisionError("secret detail")

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        status, headers, body = conn.response()
        self.assertEqual(status, 500)
        self.assertEqual(json.loads(body), {"message": "An unexpected error occurred"})
        self.assertNotIn(b"secret detail", conn.transport.value())
        self.assertEqual(headers["server"], SERVER_NAME)
        failures = [e for e in resource.events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, ZeroDivisionError)

    def test_disconnect_cancels_in_flight_work(self) -> None:
        """A client that goes away cancels the Deferred the handler waits on; nothing is written."""
        cancelled: list[bool] = []
        waiting: Deferred[None] = Deferred(lambda d: cancelled.append(True))
        after: list[str] = []

        async def handler(res: Resource, request: HTTPRequest) -> None:
            try:
                await waiting
            except CancelledError:
                after.append("cancelled")
                raise
            after.append("resumed")  # pragma: no cover

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        d = getattr(resource.requests[0], DEFERRED_ATTRIBUTE)
        conn.lose()
        self.assertEqual(cancelled, [True])
        self.assertEqual(after, ["cancelled"])
        self.assertEqual(conn.transport.value(), b"")
        # The cancellation ended the handler's Deferred quietly: no unhandled error.
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([e for e in resource.events if "log_failure" in e], [])

    def test_uncancellable_handler_runs_to_the_end(self) -> None:
        """A handler the resource marks uncancellable finishes its work, writing nothing."""
        waiting: Deferred[None] = Deferred()
        done: list[str] = []

        async def handler(res: Resource, request: HTTPRequest) -> None:
            await waiting
            done.append("committed")
            res.respond_json(request, 201, {})

        resource = Resource(handler)
        resource.is_cancellable = lambda request: False  # type: ignore[method-assign]
        conn = Connection(resource)
        conn.send()
        conn.lose()
        self.assertEqual(done, [])
        waiting.callback(None)
        self.assertEqual(done, ["committed"])
        self.assertEqual(conn.transport.value(), b"")
        self.assertIsNone(self.successResultOf(getattr(resource.requests[0], DEFERRED_ATTRIBUTE)))

    def test_no_write_after_disconnect(self) -> None:
        """A handler that swallows nothing but finishes after the client left writes nothing."""
        waiting: Deferred[None] = Deferred()

        async def handler(res: Resource, request: HTTPRequest) -> None:
            try:
                await waiting
            except CancelledError:
                pass  # (bad style, on purpose) the handler tries to carry on
            res.respond_json(request, 200, {"late": True})

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        conn.lose()
        self.assertEqual(conn.transport.value(), b"")

    def test_unexpected_cancellation_is_a_500(self) -> None:
        """A CancelledError while the client still waits is answered 500 and logged."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            d: Deferred[None] = Deferred()
            d.cancel()
            await d

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        status, _, body = conn.response()
        self.assertEqual(status, 500)
        self.assertEqual(json.loads(body), {"message": "An unexpected error occurred"})
        self.assertEqual(len([e for e in resource.events if "log_failure" in e]), 1)
        d = getattr(resource.requests[0], DEFERRED_ATTRIBUTE)
        self.assertIsNone(self.successResultOf(d))

    def test_error_after_response_started_aborts(self) -> None:
        """An error after headers were sent cuts the connection instead of appending a 500."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            request.setResponseCode(200)
            request.write(b"partial")
            raise RuntimeError("mid-body")

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        self.assertNotIn(b"An unexpected error occurred", conn.transport.value())
        self.assertTrue(conn.transport.disconnecting)

    def test_error_after_finish_writes_nothing_more(self) -> None:
        """A handler that answered and then failed leaves the answer alone."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            res.respond_json(request, 200, {"ok": True})
            raise RuntimeError("after")

        resource = Resource(handler)
        conn = Connection(resource)
        conn.send()
        status, _, body = conn.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"ok": True})
        self.assertEqual(conn.transport.value().count(b"HTTP/1.1"), 1)

    def test_handler_that_forgets_to_finish_is_finished(self) -> None:
        """A handler returning without finishing still completes the response."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            request.setResponseCode(202)

        conn = Connection(Resource(handler))
        conn.send()
        self.assertEqual(conn.response()[0], 202)

    def test_empty_json_body(self) -> None:
        """A 204 has no body and no Content-Length (RFC 9110)."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            res.respond_json(request, 204)

        conn = Connection(Resource(handler))
        conn.send()
        status, headers, body = conn.response()
        self.assertEqual(status, 204)
        self.assertEqual(body, b"")
        self.assertNotIn("content-length", headers)
        self.assertNotIn("transfer-encoding", headers)

    def test_empty_200_has_zero_length(self) -> None:
        """An empty 200 says Content-Length: 0, so keep-alive clients know it ended."""

        async def handler(res: Resource, request: HTTPRequest) -> None:
            res.respond_json(request, 200)

        conn = Connection(Resource(handler))
        conn.send()
        status, headers, body = conn.response()
        self.assertEqual((status, headers["content-length"], body), (200, "0", b""))
