# -*- test-case-name: tests.unit.test_admin_root -*-
"""``/cluster``: list, join and force-leave members (SPEC §1.5).

The membership itself belongs to the node (``NodeInfo``); these handlers only
validate parameters the way Kong did and translate the node's ``ValueError``
(Serf's first output line, in Kong) into a 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kongtx.admin.routes.base import Call, HTTPError, Reply, Route, route

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


def _text(value: Any) -> str | None:
    """A usable single string parameter, or None when missing or empty."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def routes(admin: AdminResource) -> list[Route]:
    """The three cluster operations."""

    async def members(call: Call) -> Reply:
        found = await admin.node.members()
        status = _text(call.query.get("status"))
        if status is not None:
            found = [m for m in found if m.get("status") == status]
        return Reply(200, {"data": found, "total": len(found)})

    async def join(call: Call) -> Reply:
        address = _text(call.params.get("address"))
        if address is None:
            raise HTTPError(400, {"message": 'Missing node "address"'})
        try:
            await admin.node.join(address)
        except ValueError as error:
            raise HTTPError(400, {"message": str(error)}) from error
        return Reply(200)

    async def force_leave(call: Call) -> Reply:
        # In the body, not the URL: Kong read only the body here.
        name = _text(call.body.get("name"))
        if name is None:
            raise HTTPError(400, {"message": 'Missing node "name"'})
        try:
            await admin.node.force_leave(name)
        except ValueError as error:
            raise HTTPError(400, {"message": str(error)}) from error
        return Reply(200)

    return [route("/cluster", GET=members, POST=join, DELETE=force_leave)]
