# -*- test-case-name: tests.unit.test_admin_upstreams -*-
"""``/upstreams`` and an upstream's ``/targets`` (Kong 1.x load balancing, issue 9).

Beyond Kong 0.9's API: an upstream is a virtual host name an API's
``upstream_url`` may use, and its targets the ``host:port`` pairs the balancer
picks from.  Targets follow Kong 2.x (one row per ``(upstream, target)``, PATCH
and DELETE work), not 0.10's append-only history.  Health routes
(``/upstreams/{u}/health``, ``.../healthy``) live in their own module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, is_uuid, route
from kongtx.store.interface import Row
from kongtx.store.schemas import normalize_target

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


async def find_upstream(admin: AdminResource, segment: str) -> Row:
    """The upstream a ``{name or id}`` segment names, or 404."""
    return await crud.find_one(admin, "upstreams", segment, "name")


async def find_target(admin: AdminResource, upstream: Row, segment: str) -> Row:
    """The target of ``upstream`` a ``{target or id}`` segment names, or 404.

    A target is looked up as it is stored (``host:port``), so ``example.com``
    finds ``example.com:8000``.
    """
    scope = {"upstream_id": upstream["id"]}
    if is_uuid(segment):
        return await crud.find_one(admin, "targets", segment, None, scope)
    normal = normalize_target(segment)
    if normal is None:
        raise HTTPError(404, NOT_FOUND)
    return await crud.find_one(admin, "targets", normal, "target", scope)


def routes(admin: AdminResource) -> list[Route]:
    """The upstream and target routes."""

    async def find(call: Call) -> Row:
        return await find_upstream(admin, call.args["upstream"])

    async def put_upstream(call: Call) -> Reply:
        """PUT /upstreams/{name or id}: replace the one named, or create it by that name."""
        segment = call.args["upstream"]
        params: dict[str, Any] = dict(call.params)
        try:
            row = await find_upstream(admin, segment)
        except HTTPError:
            if is_uuid(segment):
                raise  # ids are generated: an unknown one names nothing to replace
            return await crud.create(admin, "upstreams", {**params, "name": segment})
        params.update(id=row["id"], created_at=row["created_at"])
        if not is_uuid(segment):
            params["name"] = segment
        updated = await admin.dao.update("upstreams", {"id": row["id"]}, params, full=True)
        if updated is None:
            raise HTTPError(404, NOT_FOUND)
        return Reply(200, crud.render(updated))

    async def scoped(call: Call) -> tuple[Row, dict[str, Any]]:
        """The upstream of the path and the params with its id forced in."""
        upstream = await find(call)
        return upstream, {**call.params, "upstream_id": upstream["id"]}

    async def scope(call: Call) -> dict[str, Any]:
        return {"upstream_id": (await find(call))["id"]}

    async def find_one_target(call: Call) -> Row:
        return await find_target(admin, await find(call), call.args["target"])

    async def upsert_target(call: Call) -> Reply:
        upstream, params = await scoped(call)
        given = params.get("id")
        if isinstance(given, str) and is_uuid(given):
            # only a target of this upstream may be replaced (never moved from another)
            await find_target(admin, upstream, given)
        return await crud.upsert(admin, "targets", params)

    async def patch_target(call: Call) -> Reply:
        upstream, params = await scoped(call)
        row = await find_target(admin, upstream, call.args["target"])
        return await crud.patch(admin, "targets", row, params if call.params else {})

    upstream = crud.entity_methods(admin, "upstreams", find)
    upstream["PUT"] = put_upstream
    targets = crud.collection_methods(admin, "targets", scope)
    targets["PUT"] = upsert_target
    target = crud.entity_methods(admin, "targets", find_one_target)
    target["PATCH"] = patch_target
    return [
        route("/upstreams", **crud.collection_methods(admin, "upstreams")),
        route("/upstreams/{upstream}", **upstream),
        route("/upstreams/{upstream}/targets", **targets),
        route("/upstreams/{upstream}/targets/{target}", **target),
    ]
