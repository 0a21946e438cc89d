# -*- test-case-name: tests.unit.test_admin_apis -*-
"""``/apis``, ``/apis/{name or id}`` and an API's plugins (SPEC §1.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Route, route
from kongtx.store.interface import Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


async def find_api(admin: AdminResource, segment: str) -> Row:
    """The API a ``{name or id}`` segment names, or 404."""
    return await crud.find_one(admin, "apis", segment, "name")


def routes(admin: AdminResource) -> list[Route]:
    """The API routes and the API-scoped plugin routes."""

    async def find(call: Call) -> Row:
        return await find_api(admin, call.args["api"])

    async def scope(call: Call) -> dict[str, Any]:
        return {"api_id": (await find(call))["id"]}

    async def find_plugin(call: Call) -> Row:
        api = await find(call)
        plugin = await crud.find_one(admin, "plugins", call.args["id"], None)
        if plugin.get("api_id") != api["id"]:
            raise HTTPError(404, NOT_FOUND)
        return plugin

    return [
        route("/apis", **crud.collection_methods(admin, "apis")),
        route("/apis/{api}", **crud.entity_methods(admin, "apis", find)),
        route("/apis/{api}/plugins", **crud.collection_methods(admin, "plugins", scope)),
        route("/apis/{api}/plugins/{id}", **crud.entity_methods(admin, "plugins", find_plugin)),
    ]
