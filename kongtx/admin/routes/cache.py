# -*- test-case-name: tests.unit.test_admin_root -*-
"""``/cache`` and ``/cache/{key}``: look into and empty this node's cache (SPEC §1.5)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, route

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource

#: How Kong's cache marked a cached miss (``{"null":true}``); GET shows it the same way.
NEGATIVE_PLACEHOLDER = {"null": True}


def _jsonable(value: Any) -> Any:
    """Cache values are Python objects (rows, router indexes): show what JSON can."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Mapping):  # a cached row (kongtx.store.rows.FrozenRow)
        return dict(value)
    return repr(value)


def routes(admin: AdminResource) -> list[Route]:
    """Cache inspection and purge."""

    async def get_entry(call: Call) -> Reply:
        hit, value = admin.cache.peek(call.args["key"])
        if not hit:
            raise HTTPError(404, NOT_FOUND)
        if value is None:
            value = NEGATIVE_PLACEHOLDER
        raw = json.dumps(value, default=_jsonable, separators=(",", ":"), ensure_ascii=False)
        return Reply(200, raw=raw.encode("utf-8"))

    async def delete_entry(call: Call) -> Reply:
        admin.cache.invalidate(call.args["key"])
        return Reply(204)

    async def flush(call: Call) -> Reply:
        admin.cache.flush()
        return Reply(204)

    return [
        route("/cache", DELETE=flush),
        route("/cache/{key}", GET=get_entry, DELETE=delete_entry),
    ]
