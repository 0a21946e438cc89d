# -*- test-case-name: tests.unit.test_plugin_cors -*-
"""cors: answer CORS preflights at the gateway, decorate other responses (SPEC §4.4).

Priority 2000, above the auth plugins (1000): a browser's preflight carries no
credentials, so it must be answered before key-auth & co. would reject it.

Every header value is computed once per configuration here; the phases only copy
them (the preflight's ``Access-Control-Allow-Headers`` may echo the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext

#: ctx.shared flag: this request's response must not get CORS headers in header_filter
#: (a preflight answered here already has them; a continued preflight gets none).
SKIP_RESPONSE_HEADERS = "cors.skip_response_headers"

DEFAULT_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"


def lua_number(value: Any) -> str:
    """A number as Lua's ``tostring`` prints it (``3600``, not ``3600.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(value, ".14g")
    return str(value)


class Handler(BasePlugin):
    """The cors plugin's request-time half."""

    PRIORITY = 2000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        origin = config.get("origin")
        self.origin: str = "*" if origin is None else str(origin)
        self.vary = origin is not None
        self.credentials = bool(config.get("credentials"))
        self.preflight_continue = bool(config.get("preflight_continue"))
        headers = config.get("headers")
        #: None: echo the preflight's Access-Control-Request-Headers
        self.allow_headers: str | None = None if headers is None else ",".join(headers)
        methods = config.get("methods")
        self.allow_methods = DEFAULT_METHODS if methods is None else ",".join(methods)
        exposed = config.get("exposed_headers")
        self.expose_headers: str | None = None if exposed is None else ",".join(exposed)
        max_age = config.get("max_age")
        self.max_age: str | None = None if max_age is None else lua_number(max_age)

    def access(self, ctx: RequestContext) -> PhaseResult:
        if ctx.method != "OPTIONS":
            return None
        # either way, header_filter adds nothing: a continued preflight is the
        # upstream's to answer, an answered one has its headers already
        ctx.shared[SKIP_RESPONSE_HEADERS] = True
        if self.preflight_continue:
            return None
        headers: dict[str, str] = {"Access-Control-Allow-Origin": self.origin}
        if self.vary:
            headers["Vary"] = "Origin"
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if self.allow_headers is None:
            requested = ctx.headers.get_all("Access-Control-Request-Headers")
            headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        else:
            headers["Access-Control-Allow-Headers"] = self.allow_headers
        headers["Access-Control-Allow-Methods"] = self.allow_methods
        if self.max_age is not None:
            headers["Access-Control-Max-Age"] = self.max_age
        ctx.respond(204, None, headers)
        return None

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        if ctx.shared.get(SKIP_RESPONSE_HEADERS):
            return None
        response = ctx.response_headers
        response.set("Access-Control-Allow-Origin", self.origin)
        if self.vary:
            response.set("Vary", "Origin")
        if self.credentials:
            response.set("Access-Control-Allow-Credentials", "true")
        if self.expose_headers is not None:
            response.set("Access-Control-Expose-Headers", self.expose_headers)
        return None
