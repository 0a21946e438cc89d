# -*- test-case-name: tests.unit.test_http_resource -*-
"""The one asynchronous ``twisted.web`` Resource base (STYLE.md rules 6, 7 and 8).

Why one base: the Admin API and the proxy both have to get the same hard parts
right, and there is exactly one place to get them right:

* ``render`` wraps the handler coroutine once with ``Deferred.fromCoroutine``,
  keeps the Deferred on the request and returns ``NOT_DONE_YET``;
* one wrapper turns every exception into an error response chosen by the
  subclass (JSON 500 for the Admin API, 502/504 for the proxy); the traceback is
  logged with ``log.failure`` and never sent to the client;
* nothing is written once the request finished or the client went away;
* when the client disconnects, the in-flight Deferred is cancelled, so the work
  it waits on (a datastore query, an upstream request) is abandoned too; a
  subclass exempts handlers that must finish (``is_cancellable``);
* ``CancelledError`` is never turned into an error response and never
  swallowed by handler code: it travels up to this edge, where a cancellation
  we caused ourselves (the client left) is the expected end of the story.
"""

from __future__ import annotations

import json
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import IO, Any, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from kongtx import SERVER_NAME
from kongtx.log import logger

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"

#: The attribute of the request that holds the handler's Deferred (Synapse calls
#: it ``render_deferred`` too); tests and the proxy's log phase look at it.
DEFERRED_ATTRIBUTE = "render_deferred"


def json_bytes(value: Any) -> bytes:
    """Serialise ``value`` the way Kong's cjson did: compact, UTF-8, ``/`` unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class HTTPRequest(Protocol):
    """The slice of ``twisted.web.server.Request`` kongtx uses, typed.

    Twisted's own methods are unannotated, which strict mypy refuses to call;
    handlers are written against this Protocol and receive the real Request.
    """

    method: bytes
    uri: bytes
    path: bytes
    args: dict[bytes, list[bytes]]
    content: IO[bytes] | None
    finished: int
    startedWriting: int
    channel: Any
    requestHeaders: Any

    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...
    def getHeader(self, key: bytes) -> bytes | None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...
    def getRequestHostname(self) -> bytes: ...
    def getHost(self) -> Any: ...
    def isSecure(self) -> bool: ...


class _RequestState:
    """What the base knows about one request while its coroutine runs."""

    __slots__ = ("deferred", "gone")

    def __init__(self) -> None:
        self.gone = False
        self.deferred: Deferred[None] | None = None


class AsyncResource(Resource, metaclass=ABCMeta):
    """Base of every kongtx HTTP front-end: implement :meth:`handle`.

    ``handle`` writes its response with :meth:`respond` (or streams with
    ``request.write`` guarded by :meth:`can_write`).  Anything it raises ends in
    :meth:`error_response`.
    """

    isLeaf = True
    log = logger()

    #: Headers put on every response this resource writes (the Admin API adds CORS).
    default_headers: Mapping[bytes, bytes] = {}

    def render(self, twisted_request: IRequest) -> int:
        """Start the handler coroutine; the response is written when it completes."""
        request = cast(HTTPRequest, twisted_request)
        state = _RequestState()

        def client_gone(reason: Failure) -> None:
            state.gone = True
            if (
                state.deferred is not None
                and not state.deferred.called
                and self.is_cancellable(request)
            ):
                state.deferred.cancel()

        request.notifyFinish().addErrback(client_gone)
        d = Deferred.fromCoroutine(self._run(request, state))
        state.deferred = d
        setattr(request, DEFERRED_ATTRIBUTE, d)
        d.addErrback(self._cancelled, request)
        return NOT_DONE_YET

    async def _run(self, request: HTTPRequest, state: _RequestState) -> None:
        """The single wrapper: every exception becomes an error response."""
        try:
            await self.handle(request)
        except CancelledError:
            if state.gone or request.finished:
                # We cancelled it because the client left: the Deferred fails with
                # CancelledError and _cancelled() records it.  Nothing to write.
                raise
            # A cancellation nobody asked for (an inner timeout that leaked): the
            # client still waits, so it gets the generic error, and the failure is
            # logged; the CancelledError still ends this Deferred.
            self.log.failure(
                "{method} {uri} was cancelled while the client was waiting",
                method=request.method,
                uri=request.uri,
            )
            self._respond_error(request, state, CancelledError())
            raise
        except Exception as error:
            self.log.failure(
                "unexpected error while handling {method} {uri}",
                method=request.method,
                uri=request.uri,
            )
            self._respond_error(request, state, error)
            return
        if self.can_write(request) and not state.gone and not request.finished:
            # A handler that forgot to finish would leave the client hanging forever.
            request.finish()

    def _respond_error(
        self, request: HTTPRequest, state: _RequestState, error: BaseException
    ) -> None:
        if state.gone or not self.can_write(request):
            return
        if request.startedWriting:
            # Headers are gone already: the only honest thing left is to cut the
            # connection so the client sees a truncated response, not a valid one.
            transport = request.channel.transport if request.channel is not None else None
            if transport is not None:
                transport.abortConnection()
            return
        status, headers, body = self.error_response(request, error)
        self.respond(request, status, body, headers)

    def _cancelled(self, failure: Failure, request: HTTPRequest) -> None:
        """The edge: a cancellation ends here; anything else is a bug in the base."""
        if isinstance(failure.value, CancelledError):
            self.log.debug(
                "{method} {uri}: handler ended by cancellation",
                method=request.method,
                uri=request.uri,
            )
            return
        self.log.failure("failure escaped the error wrapper", failure=failure)  # pragma: no cover

    def is_cancellable(self, request: HTTPRequest) -> bool:
        """May a disconnect cancel this request's handler?  (STYLE.md rule 8.)

        Yes by default: waiting on work nobody will read is waste.  A subclass
        says no for handlers that must run to the end once started (an Admin write
        cancelled between commit and cache invalidation would leave the cache stale).
        """
        return True

    @abstractmethod
    async def handle(self, request: HTTPRequest) -> None:
        """Produce the response for ``request`` (subclasses implement this)."""

    def error_response(
        self, request: HTTPRequest, error: BaseException
    ) -> tuple[int, Mapping[bytes, bytes], bytes]:
        """Status, headers and body for an unexpected failure (the JSON 500 by default)."""
        return (
            500,
            {b"Content-Type": JSON_CONTENT_TYPE},
            json_bytes({"message": "An unexpected error occurred"}),
        )

    @staticmethod
    def can_write(request: HTTPRequest) -> bool:
        """False once the request finished or its connection is gone."""
        return not request.finished and not getattr(request, "_disconnected", False)

    def respond(
        self,
        request: HTTPRequest,
        status: int,
        body: bytes | None,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> None:
        """Write a whole response and finish it; a no-op when the client is gone."""
        if not self.can_write(request):
            return
        request.setResponseCode(status)
        for name, value in self.default_headers.items():
            request.setHeader(name, value)
        request.setHeader(b"Server", SERVER_NAME.encode("ascii"))
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        if status in NO_BODY_CODES:
            # RFC 9110: a 204/304 carries neither a body nor a Content-Length.
            request.finish()
            return
        request.setHeader(b"Content-Length", b"%d" % len(body or b""))
        if body:
            request.write(body)
        request.finish()

    def respond_json(
        self,
        request: HTTPRequest,
        status: int,
        value: Any = None,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> None:
        """A Kong-generated JSON response; ``value=None`` sends an empty body."""
        all_headers = {b"Content-Type": JSON_CONTENT_TYPE}
        all_headers.update(headers or {})
        body = None if value is None else json_bytes(value)
        self.respond(request, status, body, all_headers)
