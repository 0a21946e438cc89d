# -*- test-case-name: tests.unit.test_plugin_galileo,tests.unit.test_plugin_runscope -*-
"""The base of the logging handlers that may log bodies (galileo, runscope).

Kept out of :mod:`kongtx.plugins.log_serializer`, which the compiled build compiles
(``kongtx.build_info.HOT_PATH``): pure handlers subclass this class, and interpreted
code cannot subclass a class mypyc compiled.
"""

from __future__ import annotations

from kongtx.plugins.base import BasePlugin, PhaseResult, RequestContext
from kongtx.plugins.log_serializer import capture_request_body, capture_response_chunk

__all__ = ["BodyLoggingPlugin"]


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
