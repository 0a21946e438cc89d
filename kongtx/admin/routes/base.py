# -*- test-case-name: tests.unit.test_admin_routing -*-
"""The vocabulary every Admin route module shares: a call, a reply, a route.

Why separate from ``kongtx.admin.resource``: route modules import these names
and the resource imports the route modules; keeping the small types here keeps
the import graph one-way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from kongtx.http.resource import JSON_CONTENT_TYPE, HTTPRequest

NOT_FOUND = {"message": "Not found"}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def is_uuid(value: Any) -> bool:
    """SPEC §1.4's uuid test for ``{name or id}`` path segments (case-insensitive)."""
    return isinstance(value, str) and _UUID.match(value) is not None


def lua_text(value: Any) -> str:
    """A value as Lua's ``tostring`` wrote it into Kong's messages (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return str(value)


@dataclass
class Call:
    """One routed Admin request.

    ``query`` and ``body`` are already expanded (dotted keys, arrays); ``args``
    are the percent-decoded path captures.
    """

    request: HTTPRequest
    method: str
    path: str
    args: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        """What Lapis called ``self.params``: query arguments overlaid by the body."""
        merged = dict(self.query)
        merged.update(self.body)
        return merged


@dataclass
class Reply:
    """A whole response.  ``body=None`` sends an empty body; ``raw`` wins over ``body``."""

    status: int
    body: Any = None
    raw: bytes | None = None
    headers: dict[bytes, bytes] = field(
        default_factory=lambda: {b"Content-Type": JSON_CONTENT_TYPE}
    )


class HTTPError(Exception):
    """Raised by a handler to answer ``status`` with the JSON ``body`` (None: empty)."""

    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """A path template and the handlers of the methods it declares."""

    template: str
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]
    #: methods that take no body, so a request without Content-Type is no 415
    #: (Kong 1.x's ``curl -X POST .../healthy``); every 0.9 route keeps SPEC §1.2's rule
    bodyless: frozenset[str] = frozenset()

    def match(self, path: str) -> dict[str, str] | None:
        """The decoded captures when ``path`` (raw, no trailing slash) matches."""
        m = self.pattern.match(path)
        if m is None:
            return None
        return {k: unquote(v) for k, v in m.groupdict().items()}


_PARAM = re.compile(r"\{(\w+)\}")


def route(template: str, bodyless: Iterable[str] = (), /, **methods: Handler) -> Route:
    """``route("/apis/{api}", GET=..., PATCH=...)``: ``{x}`` captures one path segment."""
    parts: list[str] = []
    last = 0
    for m in _PARAM.finditer(template):
        parts.append(re.escape(template[last : m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]+)")
        last = m.end()
    parts.append(re.escape(template[last:]))
    pattern = re.compile("^" + "".join(parts) + "$")
    return Route(template, pattern, dict(methods), frozenset(bodyless))
