# -*- test-case-name: tests.unit.test_proxy_errors -*-
"""The proxy's own error pages (SPEC §3.5), and the JSON responses Kong generates.

nginx-level errors (the upstream refused, timed out, the request was malformed)
get a body in the format the client's ``Accept`` header asks for; Kong-generated
responses (no API matched, a plugin said no) are always JSON.  Both carry
``Server: kong/0.9.9`` and never ``Via``.  A failure to reach the upstream is
classified into the page it deserves here too (:func:`classify`, :func:`connect_error`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

SERVER = "kong/0.9.9"
JSON_TYPE = "application/json; charset=utf-8"

MESSAGES: dict[int, str] = {
    404: "Not found",
    408: "Request timeout",
    411: "Length required",
    412: "Precondition failed",
    413: "Payload too large",
    414: "URI too long",
    417: "Expectation failed",
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}


def error_message(status: int) -> str:
    """The message of SPEC §3.5's table for ``status``."""
    return MESSAGES.get(status, f"The upstream server responded with {status}")


def error_page(status: int, accept: str | None) -> tuple[str, bytes]:
    """``(content type, body)`` of the error page for ``status`` given ``Accept``.

    Order of the checks is Kong's: no Accept -> text; ``text/html`` -> HTML;
    else ``application/json`` -> JSON; else ``application/xml`` -> XML; else text.
    The content type is the bare media type, as Kong's error handler set it.
    """
    msg = error_message(status)
    if accept:
        if "text/html" in accept:
            body = (
                "<html><head><title>Kong Error</title></head><body>"
                f"<h1>Kong Error</h1><p>{msg}.</p></body></html>"
            )
            return "text/html", body.encode("utf-8")
        if "application/json" in accept:
            return "application/json", json_body({"message": msg})
        if "application/xml" in accept:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<error><message>{msg}</message></error>'
            )
            return "application/xml", body.encode("utf-8")
    return "text/plain", msg.encode("utf-8")


def json_body(value: Mapping[str, Any] | list[Any]) -> bytes:
    """Compact JSON, the way Kong's encoder writes response bodies."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_headers(content_type: str, length: int) -> list[tuple[str, str]]:
    """Headers of a Kong-generated response."""
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(length)),
        ("Server", SERVER),
    ]


class UpstreamError(Exception):
    """The upstream could not produce a response: mapped to an error page.

    ``status`` is 502 (refused, unreachable, broke the protocol) or 504 (timed out).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class ConnectError(UpstreamError):
    """The connection to the upstream failed or timed out: nothing was sent."""


def connect_error(exc: Exception) -> Exception:
    """What a failed connect raises: :class:`ConnectError`, but ``CancelledError`` when
    the client went away (an endpoint cancels with ``ConnectingCancelledError``): that is
    no failure of the upstream, to be counted against a balanced pick or retried."""
    if isinstance(exc, CancelledError | ierror.ConnectingCancelledError):
        return CancelledError()
    e = classify(Failure(exc))
    return ConnectError(e.status, e.reason)


def classify(failure: Failure) -> UpstreamError:
    """Map a connect failure to the error page it deserves (SPEC §3.5)."""
    exc = failure.value
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, ierror.TimeoutError | TimeoutError):
        return UpstreamError(504, "upstream connect timed out")
    if isinstance(exc, ierror.DNSLookupError):
        return UpstreamError(502, f"upstream name not resolved: {exc}")
    reasons = getattr(exc, "reasons", None)
    if reasons:
        for inner in reasons:
            if isinstance(inner, Failure) and inner.check(ierror.TimeoutError, TimeoutError):
                return UpstreamError(504, "upstream timed out")
    return UpstreamError(502, f"upstream unreachable: {exc!r}")
