# -*- test-case-name: tests.unit.test_admin_credentials -*-
"""Consumer-scoped credential routes generated from the plugin registry (SPEC §1.6).

Every credential plugin gets the same six operations; only the collection and
the natural key of its item segment differ, so the routes are built from the
registry's :class:`~kongtx.plugins.spec.CredentialRoute` list rather than
written out per plugin.  OAuth2's extra, unscoped routes (``/oauth2_tokens``,
``/oauth2``) are added when its collections are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes import crud
from kongtx.admin.routes.base import Call, Reply, Route, route
from kongtx.admin.routes.consumers import find_consumer
from kongtx.plugins.spec import CredentialRoute
from kongtx.store.interface import Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource


def credential_routes(admin: AdminResource, spec: CredentialRoute) -> list[Route]:
    """``/consumers/{c}/<path>`` and ``/consumers/{c}/<path>/{credential}`` for one plugin."""
    collection = spec.collection

    async def scope(call: Call) -> dict[str, str]:
        consumer = await find_consumer(admin, call.args["consumer"])
        return {"consumer_id": consumer["id"]}

    async def find(call: Call) -> Row:
        scoped = await scope(call)
        return await crud.find_one(
            admin, collection, call.args["credential"], spec.natural_key, scoped
        )

    async def patch_credential(call: Call) -> Reply:
        row = await find(call)
        params = call.params
        # Kong injected consumer_id before its emptiness check, so an empty PATCH
        # "succeeded"; kongtx checks the body the operator sent, as SPEC §1.4 says.
        if params:
            params = {**params, "consumer_id": row["consumer_id"]}
        return await crud.patch(admin, collection, row, params)

    one = crud.entity_methods(admin, collection, find)
    one["PATCH"] = patch_credential
    base = f"/consumers/{{consumer}}/{spec.path}"
    return [
        route(base, **crud.collection_methods(admin, collection, scope)),
        route(base + "/{credential}", **one),
    ]


def oauth2_routes(admin: AdminResource) -> list[Route]:
    """``/oauth2_tokens``, ``/oauth2_tokens/{access_token or id}`` and ``GET /oauth2``."""

    async def find_token(call: Call) -> Row:
        return await crud.find_one(admin, "oauth2_tokens", call.args["token"], "access_token")

    async def list_applications(call: Call) -> Reply:
        return await crud.paginate(admin, call, "oauth2_credentials")

    return [
        route("/oauth2_tokens", **crud.collection_methods(admin, "oauth2_tokens")),
        route("/oauth2_tokens/{token}", **crud.entity_methods(admin, "oauth2_tokens", find_token)),
        route("/oauth2", GET=list_applications),
    ]


def routes(admin: AdminResource) -> list[Route]:
    """Every credential route the loaded plugins provide."""
    found: list[Route] = []
    for spec in admin.registry.credential_routes():
        found.extend(credential_routes(admin, spec))
    if "oauth2_tokens" in admin.dao.schemas and "oauth2_credentials" in admin.dao.schemas:
        found.extend(oauth2_routes(admin))
    return found
