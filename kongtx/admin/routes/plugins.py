# -*- test-case-name: tests.unit.test_admin_plugins -*-
"""``/plugins``, ``/plugins/{id}``, ``/plugins/enabled``, ``/plugins/schema/{name}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import Call, HTTPError, Reply, Route, route
from kongtx.store.interface import Row
from kongtx.store.schemas import schema_to_json

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


def routes(admin: AdminResource) -> list[Route]:
    """Plugin configuration routes; ``enabled`` and ``schema`` come before ``{id}``."""

    async def enabled(call: Call) -> Reply:
        return Reply(200, {"enabled_plugins": admin.registry.names()})

    async def schema(call: Call) -> Reply:
        name = call.args["name"]
        spec = admin.registry.get(name)
        if spec is None:
            raise HTTPError(404, {"message": f"No plugin named '{name}'"})
        return Reply(200, schema_to_json(spec.config_schema))

    async def find(call: Call) -> Row:
        return await crud.find_one(admin, "plugins", call.args["id"], None)

    return [
        route("/plugins", **crud.collection_methods(admin, "plugins")),
        route("/plugins/enabled", GET=enabled),
        route("/plugins/schema/{name}", GET=schema),
        route("/plugins/{id}", **crud.entity_methods(admin, "plugins", find)),
    ]
