# -*- test-case-name: tests.unit.test_admin_plugins -*-
"""``/plugins``, ``/plugins/{id}``, ``/plugins/enabled``, ``/plugins/schema/{name}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import Call, HTTPError, Reply, Route, route
from kongtx.store.schemas import schema_to_json

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


def routes(admin: AdminResource) -> list[Route]:
    """Plugin configuration routes; ``enabled`` and ``schema`` come before ``{id}``."""

    async def list_plugins(call: Call) -> Reply:
        return await crud.paginate(admin, call, "plugins")

    async def create_plugin(call: Call) -> Reply:
        return await crud.create(admin, "plugins", call.params)

    async def upsert_plugin(call: Call) -> Reply:
        return await crud.upsert(admin, "plugins", call.params)

    async def enabled(call: Call) -> Reply:
        return Reply(200, {"enabled_plugins": admin.registry.names()})

    async def schema(call: Call) -> Reply:
        name = call.args["name"]
        spec = admin.registry.get(name)
        if spec is None:
            raise HTTPError(404, {"message": f"No plugin named '{name}'"})
        return Reply(200, schema_to_json(spec.config_schema))

    async def get_plugin(call: Call) -> Reply:
        row = await crud.find_one(admin, "plugins", call.args["id"], None)
        return Reply(200, crud.render(row))

    async def patch_plugin(call: Call) -> Reply:
        row = await crud.find_one(admin, "plugins", call.args["id"], None)
        return await crud.patch(admin, "plugins", row, call.params)

    async def delete_plugin(call: Call) -> Reply:
        row = await crud.find_one(admin, "plugins", call.args["id"], None)
        return await crud.delete(admin, "plugins", row)

    return [
        route("/plugins", GET=list_plugins, POST=create_plugin, PUT=upsert_plugin),
        route("/plugins/enabled", GET=enabled),
        route("/plugins/schema/{name}", GET=schema),
        route("/plugins/{id}", GET=get_plugin, PATCH=patch_plugin, DELETE=delete_plugin),
    ]
