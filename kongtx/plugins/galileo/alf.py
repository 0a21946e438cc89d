# -*- test-case-name: tests.unit.test_plugin_galileo -*-
"""ALF 1.1.0 (the HAR-based "API Log Format") entries for galileo (SPEC §4.6)."""

from __future__ import annotations

import base64
import time
from typing import Any

from kongtx.plugins.body_logging import REQUEST_BODY_KEY, RESPONSE_BODY_KEY
from kongtx.plugins.log_serializer import request_host

__all__ = ["CREATOR", "alf_document", "alf_entry"]

CREATOR = {"name": "galileo-agent-kong", "version": "1.1.0"}


def _pairs(items: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in items]


def _head_size(items: list[tuple[str, str]]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in items) + 2


def _iso(seconds: float) -> str:
    millis = int(round(seconds * 1000)) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _content(body: Any, mime: str) -> dict[str, Any]:
    data = bytes(body) if body is not None else b""
    return {
        "mimeType": mime,
        "encoding": "base64",
        "text": base64.b64encode(data).decode("ascii"),
        "size": len(data),
    }


def alf_entry(ctx: Any, log_bodies: bool) -> dict[str, Any]:
    """One HAR entry for a finished request."""
    req_headers = ctx.headers.items()
    resp_headers = ctx.response_headers.items()
    uri = getattr(ctx, "request_uri", None) or ctx.path
    upstream = getattr(ctx, "upstream_latency", None)
    total = getattr(ctx, "request_latency", None) or 0
    wait = int(upstream) if isinstance(upstream, int | float) else 0
    proxy = getattr(ctx, "proxy_latency", None)
    send = int(proxy) if isinstance(proxy, int | float) else 0
    body_in = int(getattr(ctx, "request_size", 0) or 0)
    body_out = int(getattr(ctx, "response_size", 0) or 0)
    request: dict[str, Any] = {
        "method": ctx.method,
        "url": f"{ctx.scheme}://{request_host(ctx)}:{ctx.server_port}{uri}",
        "httpVersion": "HTTP/1.1",
        "queryString": _pairs([(k, v if v is not None else "") for k, v in ctx.query]),
        "headers": _pairs(req_headers),
        "headersSize": _head_size(req_headers),
        "bodySize": body_in,
    }
    response: dict[str, Any] = {
        "status": int(ctx.status or 0),
        "statusText": "",
        "httpVersion": "HTTP/1.1",
        "headers": _pairs(resp_headers),
        "headersSize": _head_size(resp_headers),
        "bodySize": body_out,
    }
    if log_bodies:
        request["postData"] = _content(
            ctx.shared.get(REQUEST_BODY_KEY),
            ctx.headers.get("content-type") or "application/octet-stream",
        )
        response["content"] = _content(
            ctx.shared.get(RESPONSE_BODY_KEY),
            ctx.response_headers.get("content-type") or "application/octet-stream",
        )
    return {
        "serverIPAddress": str(getattr(ctx, "server_addr", "") or ""),
        "clientIPAddress": ctx.client_ip,
        "startedDateTime": _iso(ctx.started_at),
        "time": int(total),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": -1,
            "send": send,
            "wait": wait,
            "receive": max(0, int(total) - send - wait),
            "ssl": -1,
        },
    }


def alf_document(
    service_token: str, environment: str | None, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ALF wrapping ``entries``."""
    doc: dict[str, Any] = {
        "version": "1.1.0",
        "serviceToken": service_token,
        "har": {"log": {"creator": CREATOR, "entries": entries}},
    }
    if environment:
        doc["environment"] = environment
    return doc
