# -*- test-case-name: tests.unit.test_admin_consumers -*-
"""``/consumers`` and ``/consumers/{username or id}`` (SPEC §1.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import Call, Route, route
from kongtx.store.interface import Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


async def find_consumer(admin: AdminResource, segment: str) -> Row:
    """The consumer a ``{username or id}`` segment names, or 404."""
    return await crud.find_one(admin, "consumers", segment, "username")


def routes(admin: AdminResource) -> list[Route]:
    """The consumer routes (credential routes live in ``credentials``)."""

    async def find(call: Call) -> Row:
        return await find_consumer(admin, call.args["consumer"])

    return [
        route("/consumers", **crud.collection_methods(admin, "consumers")),
        route("/consumers/{consumer}", **crud.entity_methods(admin, "consumers", find)),
    ]
