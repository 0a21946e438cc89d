# -*- test-case-name: tests.unit.test_admin_consumers -*-
"""``/consumers`` and ``/consumers/{username or id}`` (SPEC §1.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import Call, Reply, Route, route
from kongtx.store.interface import Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


async def find_consumer(admin: AdminResource, segment: str) -> Row:
    """The consumer a ``{username or id}`` segment names, or 404."""
    return await crud.find_one(admin, "consumers", segment, "username")


def routes(admin: AdminResource) -> list[Route]:
    """The consumer routes (credential routes live in ``credentials``)."""

    async def list_consumers(call: Call) -> Reply:
        return await crud.paginate(admin, call, "consumers")

    async def create_consumer(call: Call) -> Reply:
        return await crud.create(admin, "consumers", call.params)

    async def upsert_consumer(call: Call) -> Reply:
        return await crud.upsert(admin, "consumers", call.params)

    async def get_consumer(call: Call) -> Reply:
        return Reply(200, crud.render(await find_consumer(admin, call.args["consumer"])))

    async def patch_consumer(call: Call) -> Reply:
        row = await find_consumer(admin, call.args["consumer"])
        return await crud.patch(admin, "consumers", row, call.params)

    async def delete_consumer(call: Call) -> Reply:
        row = await find_consumer(admin, call.args["consumer"])
        return await crud.delete(admin, "consumers", row)

    return [
        route("/consumers", GET=list_consumers, POST=create_consumer, PUT=upsert_consumer),
        route(
            "/consumers/{consumer}",
            GET=get_consumer,
            PATCH=patch_consumer,
            DELETE=delete_consumer,
        ),
    ]
