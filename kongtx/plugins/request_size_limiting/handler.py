# -*- test-case-name: tests.unit.test_plugin_request_size_limiting -*-
"""request-size-limiting: refuse request bodies over ``allowed_payload_size`` MB (SPEC §4.4).

A numeric ``Content-Length`` decides without touching the body, so an oversized
upload is refused before anything is read.  Without one (chunked bodies) the
length of the body the proxy spooled is used; a body still streaming in is read
(as Kong's ``ngx.req.read_body``) and measured.  A client that sent
``Expect: 100-continue`` gets 417 instead of 413, so it never sends the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext

__all__ = ["MB", "Handler"]

#: 1 MB = 2^20 bytes (SPEC §4.4)
MB = 1 << 20

TOO_LARGE = {"message": "Request size limit exceeded"}


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


class Handler(BasePlugin):
    """The request-size-limiting plugin's request-time half."""

    PRIORITY = 950

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.allowed_bytes = float(config.get("allowed_payload_size", 128)) * MB

    def _check(self, ctx: RequestContext, length: int) -> None:
        if length > self.allowed_bytes:
            expect = (ctx.headers.get("expect") or "").strip().lower()
            ctx.respond(417 if expect == "100-continue" else 413, TOO_LARGE)

    def access(self, ctx: RequestContext) -> PhaseResult:
        headers = ctx.headers
        length = _content_length(headers.get("content-length"))
        if length is not None:
            self._check(ctx, length)
            return None
        if headers.get("transfer-encoding") is None and headers.get("content-length") is None:
            return None  # no body at all (RFC 9112 §6.3): nothing to measure
        stream = getattr(ctx, "body_stream", None)
        if stream is not None and stream[0] is not None:
            # the proxy spooled the whole body already and knows its length
            self._check(ctx, int(stream[1]))
            return None
        return self._read_and_check(ctx)

    async def _read_and_check(self, ctx: RequestContext) -> None:
        body = await ctx.read_body()
        self._check(ctx, len(body))
