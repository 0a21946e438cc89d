# -*- test-case-name: tests.unit.test_plugin_http_log -*-
"""http-log: POST (or PUT/PATCH) the basic serializer's JSON to an endpoint (SPEC §4.6).

Kong's hand-written HTTP/1.1 request: ``Host``, ``Connection: Keep-Alive``,
``Content-Type: application/json``, ``Content-Length``, to the endpoint's path
and query; https without certificate verification.  Connections are kept for
``keepalive`` ms; each request must finish within ``timeout`` ms, else it is
dropped and counted (:class:`kongtx.plugins.log_transports.HttpSender`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_json
from kongtx.plugins.log_transports import quiet, senders

__all__ = ["Handler"]


class Handler(BasePlugin):
    """The http-log plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        url = str(config["http_endpoint"])
        self.method = str(config.get("method") or "POST").upper()
        self.sender = senders(services).http(
            url,
            float(config.get("timeout", 10000)) / 1000.0,
            float(config.get("keepalive", 60000)) / 1000.0,
        )
        parts = urlsplit(url)
        #: credentials in the endpoint URL become Basic authorization
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"

    def log(self, ctx: RequestContext) -> PhaseResult:
        body = basic_json(ctx)
        quiet(self.sender.send(self.sender.request_bytes(self.method, body, self.headers)))
        return None
