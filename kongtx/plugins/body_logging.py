# -*- test-case-name: tests.unit.test_plugin_galileo,tests.unit.test_plugin_runscope -*-
"""The logging handlers that may log bodies (galileo, runscope): their base, and the
capture of the bodies into ``ctx.shared``.

Kept out of :mod:`kongtx.plugins.log_serializer`, which the compiled build compiles
(``kongtx.build_info.HOT_PATH``): pure handlers subclass this class, and interpreted
code cannot subclass a class mypyc compiled.
"""

from __future__ import annotations

from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, RequestContext

__all__ = [
    "MAX_LOGGED_BODY",
    "REQUEST_BODY_KEY",
    "RESPONSE_BODY_KEY",
    "BodyLoggingPlugin",
    "capture_request_body",
    "capture_response_chunk",
]

#: how much of a body galileo/runscope keep per request when asked to log bodies
MAX_LOGGED_BODY = 1 << 20

#: ctx.shared keys of the captured bodies
REQUEST_BODY_KEY = "log.request_body"
RESPONSE_BODY_KEY = "log.response_body"


async def capture_request_body(ctx: Any) -> None:
    """Keep the request body for a body-logging plugin (bodies over the cap are skipped)."""
    if REQUEST_BODY_KEY in ctx.shared:
        return
    length = ctx.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_LOGGED_BODY:
        ctx.shared[REQUEST_BODY_KEY] = None
        return
    body = await ctx.read_body()
    ctx.shared[REQUEST_BODY_KEY] = body if len(body) <= MAX_LOGGED_BODY else None


def capture_response_chunk(ctx: Any, chunk: bytes) -> None:
    """Append a response chunk to the captured body, up to the cap (then stop keeping it)."""
    shared = ctx.shared
    kept = shared.get(RESPONSE_BODY_KEY)
    if kept is None:
        if RESPONSE_BODY_KEY in shared:
            return
        kept = shared[RESPONSE_BODY_KEY] = bytearray()
    if len(kept) + len(chunk) > MAX_LOGGED_BODY:
        shared[RESPONSE_BODY_KEY] = None
        return
    kept.extend(chunk)


class BodyLoggingPlugin(BasePlugin):
    """A logging handler that may log bodies (galileo, runscope): with
    :attr:`capture_bodies` the request body is read in access and the response's
    first MB kept in body_filter; without it the body streams untouched."""

    capture_bodies = False

    def access(self, ctx: RequestContext) -> PhaseResult:
        if self.capture_bodies:
            return capture_request_body(ctx)
        return None

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        if self.capture_bodies and chunk:
            capture_response_chunk(ctx, chunk)
        return chunk
