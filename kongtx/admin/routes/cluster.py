# -*- test-case-name: tests.unit.test_admin_root -*-
"""``/cluster``: list, join and force-leave members; ``/cluster/events`` (SPEC §1.5).

The membership itself belongs to the node (``NodeInfo``); these handlers only
validate parameters the way Kong did and translate the node's ``ValueError``
(Serf's first output line, in Kong) into a 400.

``POST /cluster/events`` takes Kong 0.9's event payload ``{type, collection,
primary_key, entity}`` and invalidates this node's cache keys for it (re-reading
the row for updates, as Kong did), answering 200 always.  Like Kong's it is
unauthenticated: anyone who reaches the Admin API can make this node forget cache
entries (nothing worse: the entries are re-read from the datastore).  That is why
``admin_listen`` defaults to 127.0.0.1 in kongtx.  kongtx nodes do not need it
(their invalidations travel through the cluster layer); it is kept for scripts
and event handlers written for Kong 0.9.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kongtx.admin.routes.base import Call, HTTPError, Reply, Route, route
from kongtx.cluster.events import apply_kong_event

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
    """The cluster operations and Kong's event endpoint."""

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

    async def event(call: Call) -> Reply:
        await apply_kong_event(admin.cache, admin.dao.find, dict(call.body))
        return Reply(200)

    return [
        route("/cluster", GET=members, POST=join, DELETE=force_leave),
        route("/cluster/events", POST=event),
    ]
