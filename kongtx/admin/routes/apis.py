# -*- test-case-name: tests.unit.test_admin_apis -*-
"""``/apis``, ``/apis/{name or id}`` and an API's plugins (SPEC §1.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, route
from kongtx.store.interface import Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


async def find_api(admin: AdminResource, segment: str) -> Row:
    """The API a ``{name or id}`` segment names, or 404."""
    return await crud.find_one(admin, "apis", segment, "name")


def routes(admin: AdminResource) -> list[Route]:
    """The API routes and the API-scoped plugin routes."""

    async def list_apis(call: Call) -> Reply:
        return await crud.paginate(admin, call, "apis")

    async def create_api(call: Call) -> Reply:
        return await crud.create(admin, "apis", call.params)

    async def upsert_api(call: Call) -> Reply:
        return await crud.upsert(admin, "apis", call.params)

    async def get_api(call: Call) -> Reply:
        return Reply(200, crud.render(await find_api(admin, call.args["api"])))

    async def patch_api(call: Call) -> Reply:
        row = await find_api(admin, call.args["api"])
        return await crud.patch(admin, "apis", row, call.params)

    async def delete_api(call: Call) -> Reply:
        return await crud.delete(admin, "apis", await find_api(admin, call.args["api"]))

    async def list_plugins(call: Call) -> Reply:
        api = await find_api(admin, call.args["api"])
        return await crud.paginate(admin, call, "plugins", {"api_id": api["id"]})

    async def create_plugin(call: Call) -> Reply:
        api = await find_api(admin, call.args["api"])
        return await crud.create(admin, "plugins", {**call.params, "api_id": api["id"]})

    async def upsert_plugin(call: Call) -> Reply:
        api = await find_api(admin, call.args["api"])
        return await crud.upsert(admin, "plugins", {**call.params, "api_id": api["id"]})

    async def find_plugin(call: Call) -> Row:
        api = await find_api(admin, call.args["api"])
        plugin = await crud.find_one(admin, "plugins", call.args["id"], None)
        if plugin.get("api_id") != api["id"]:
            raise HTTPError(404, NOT_FOUND)
        return plugin

    async def get_plugin(call: Call) -> Reply:
        return Reply(200, crud.render(await find_plugin(call)))

    async def patch_plugin(call: Call) -> Reply:
        plugin = await find_plugin(call)
        return await crud.patch(admin, "plugins", plugin, call.params)

    async def delete_plugin(call: Call) -> Reply:
        return await crud.delete(admin, "plugins", await find_plugin(call))

    return [
        route("/apis", GET=list_apis, POST=create_api, PUT=upsert_api),
        route("/apis/{api}", GET=get_api, PATCH=patch_api, DELETE=delete_api),
        route("/apis/{api}/plugins", GET=list_plugins, POST=create_plugin, PUT=upsert_plugin),
        route("/apis/{api}/plugins/{id}", GET=get_plugin, PATCH=patch_plugin, DELETE=delete_plugin),
    ]
