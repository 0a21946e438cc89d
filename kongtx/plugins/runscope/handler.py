# -*- test-case-name: tests.unit.test_plugin_runscope -*-
"""runscope: POST each request and response to a Runscope bucket (SPEC §4.6).

``POST <api_endpoint>/buckets/<bucket_key>/messages`` with
``Authorization: Bearer <access_token>`` and Kong's runscope message::

    {"request": {"url", "method", "headers", "body", "timestamp", "form"},
     "response": {"status", "headers", "body", "timestamp", "response_time"}}

Bodies only with ``log_body`` (the first MB; ``form`` holds a urlencoded
request body's fields).  ``api_endpoint`` is configurable, so tests point it at a
local receiver.  ``keepalive`` is in ms, as nginx's was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.body_logging import REQUEST_BODY_KEY, RESPONSE_BODY_KEY, BodyLoggingPlugin
from kongtx.plugins.log_serializer import encode, headers_table, request_host
from kongtx.plugins.log_transports import quiet, senders

__all__ = ["Handler", "runscope_message"]


def _text(body: Any) -> str | None:
    if body is None:
        return None
    return bytes(body).decode("utf-8", "replace")


def runscope_message(ctx: Any, log_body: bool, now: float) -> dict[str, Any]:
    """Kong's runscope serializer for one finished request."""
    uri = getattr(ctx, "request_uri", None) or ctx.path
    request: dict[str, Any] = {
        "url": f"{ctx.scheme}://{request_host(ctx)}:{ctx.server_port}{uri}",
        "method": ctx.method,
        "headers": headers_table(ctx.headers.items()),
        "timestamp": ctx.started_at,
    }
    response: dict[str, Any] = {
        "status": int(ctx.status or 0),
        "headers": headers_table(ctx.response_headers.items()),
        "timestamp": now,
        "response_time": max(0.0, now - ctx.started_at),
    }
    if log_body:
        body = ctx.shared.get(REQUEST_BODY_KEY)
        request["body"] = _text(body)
        content_type = (ctx.headers.get("content-type") or "").lower()
        if body and content_type.startswith("application/x-www-form-urlencoded"):
            request["form"] = dict(parse_qsl(bytes(body).decode("utf-8", "replace")))
        response["body"] = _text(ctx.shared.get(RESPONSE_BODY_KEY))
    return {"request": request, "response": response}


class Handler(BodyLoggingPlugin):
    """The runscope plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        endpoint = str(config.get("api_endpoint") or "https://api.runscope.com").rstrip("/")
        self.capture_bodies = bool(config.get("log_body"))
        self.sender = senders(services).http(
            f"{endpoint}/buckets/{config['bucket_key']}/messages",
            float(config.get("timeout", 10000)) / 1000.0,
            float(config.get("keepalive", 30)) / 1000.0,
        )
        self.clock = senders(services).clock
        self.headers = {"Authorization": f"Bearer {config.get('access_token') or ''}"}

    def log(self, ctx: RequestContext) -> PhaseResult:
        message = runscope_message(ctx, self.capture_bodies, self.clock.seconds())
        data = self.sender.request_bytes("POST", encode(message), self.headers)
        quiet(self.sender.send(data))
        return None
