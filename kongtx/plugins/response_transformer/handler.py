# -*- test-case-name: tests.unit.test_plugin_response_transformer -*-
"""response-transformer: rewrite response headers and JSON bodies (SPEC §4.5).

As Kong 0.9 (``kong/plugins/response-transformer/``): header_filter applies
remove → replace (names present) → add (names absent) → append to the response
headers, and drops ``Content-Length`` when JSON rules will rewrite the body.  The
body filter buffers a JSON response (Content-Type containing
``application/json``) to its end, applies the same four rules to its top-level
keys, and sends the re-encoded document.  Every injected value is a string.

Where Kong 0.9 misbehaved we follow the SPEC row instead: a body that is not a
JSON object passes unchanged (Kong sent an empty body), the last chunk is part of
the document (Kong dropped it), and values are injected verbatim (Kong's
re-encoding doubled backslashes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.transform_rules import Rules, append_value, apply_header_rules

#: ctx.shared key of the JSON body being buffered.
BUFFER_KEY = "response-transformer.buffer"


def is_json(content_type: str | None) -> bool:
    return content_type is not None and "application/json" in content_type.lower()


class Handler(BasePlugin):
    """The response-transformer plugin's request-time half."""

    PRIORITY = 800

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.headers = Rules(config, "headers")
        self.json = Rules(config, "json")
        self.json_rules = bool(self.json)

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        headers = ctx.response_headers
        apply_header_rules(headers, self.headers)
        if self.json_rules and is_json(headers.get("Content-Type")):
            # the body is about to change length
            headers.remove("Content-Length")
        return None

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        if not self.json_rules:
            return chunk
        buffer: list[bytes] | None = ctx.shared.get(BUFFER_KEY)
        if buffer is None:
            if not is_json(ctx.response_headers.get("Content-Type")):
                return chunk
            buffer = ctx.shared[BUFFER_KEY] = []
        buffer.append(chunk)
        if not last:
            return b""
        body = b"".join(buffer)
        buffer.clear()
        transformed = self.transform_json(body)
        return body if transformed is None else transformed

    def transform_json(self, body: bytes) -> bytes | None:
        """The rewritten document, or ``None`` when ``body`` is not a JSON object."""
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        rules = self.json
        for name, _ in rules.remove:
            doc.pop(name, None)
        for name, value in rules.replace:
            if name in doc:
                doc[name] = value or ""
        for name, value in rules.add:
            if name not in doc:
                doc[name] = value or ""
        for name, value in rules.append:
            doc[name] = append_value(doc.get(name), value or "")
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
