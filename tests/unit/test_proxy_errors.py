"""The proxy's error pages (SPEC §3.5) and upstream failure mapping."""

from __future__ import annotations

import json

import pytest
from twisted.internet import error as ierror
from twisted.python.failure import Failure

from kongtx.proxy.errors import MESSAGES, classify, error_message, error_page


@pytest.mark.parametrize(
    ("status", "msg"),
    [
        (404, "Not found"),
        (408, "Request timeout"),
        (411, "Length required"),
        (412, "Precondition failed"),
        (413, "Payload too large"),
        (414, "URI too long"),
        (417, "Expectation failed"),
        (500, "An unexpected error occurred"),
        (502, "An invalid response was received from the upstream server"),
        (503, "The upstream server is currently unavailable"),
        (504, "The upstream server is timing out"),
    ],
)
def test_messages(status: int, msg: str) -> None:
    """Each status of SPEC §3.5's table has its exact message."""
    assert error_message(status) == msg
    assert MESSAGES[status] == msg


def test_other_status_message() -> None:
    """A status outside the table says which status the upstream gave."""
    assert error_message(418) == "The upstream server responded with 418"


def test_no_accept_is_plain_text() -> None:
    """Without Accept the body is plain text."""
    assert error_page(502, None) == (
        "text/plain",
        b"An invalid response was received from the upstream server",
    )


def test_html() -> None:
    """Accept containing text/html gives Kong's HTML page, with a full stop after MSG."""
    ctype, body = error_page(504, "text/html,application/json")
    assert ctype == "text/html"
    assert body == (
        b"<html><head><title>Kong Error</title></head><body><h1>Kong Error</h1>"
        b"<p>The upstream server is timing out.</p></body></html>"
    )


def test_json() -> None:
    """Accept containing application/json (and not text/html) gives {"message": MSG}."""
    ctype, body = error_page(502, "application/json")
    assert ctype == "application/json"
    assert json.loads(body) == {
        "message": "An invalid response was received from the upstream server"
    }


def test_xml() -> None:
    """Accept containing application/xml gives the XML document."""
    ctype, body = error_page(404, "application/xml")
    assert ctype == "application/xml"
    assert body.startswith(b"<?xml")
    assert body.endswith(b"<error><message>Not found</message></error>")


def test_unknown_accept_is_text() -> None:
    """Any other Accept falls back to plain text."""
    assert error_page(500, "image/png")[0] == "text/plain"


def test_refused_is_502() -> None:
    """A refused connection maps to 502."""
    assert classify(Failure(ierror.ConnectionRefusedError())).status == 502


def test_dns_failure_is_502() -> None:
    """An unresolvable upstream name maps to 502."""
    assert classify(Failure(ierror.DNSLookupError("nope"))).status == 502


def test_connect_timeout_is_504() -> None:
    """A connect timeout maps to 504."""
    assert classify(Failure(ierror.TimeoutError())).status == 504


def test_other_connect_failures_are_502() -> None:
    """Any other connect failure (no route, reset) maps to 502."""
    assert classify(Failure(ierror.NoRouteError())).status == 502
    assert classify(Failure(ierror.ConnectionLost())).status == 502


def test_upstream_error_passes_through() -> None:
    """An UpstreamError keeps its own status."""
    from kongtx.proxy.errors import UpstreamError

    assert classify(Failure(UpstreamError(504, "x"))).status == 504
