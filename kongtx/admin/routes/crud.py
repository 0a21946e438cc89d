# -*- test-case-name: tests.unit.test_admin_apis -*-
"""The CRUD helpers every collection route shares (SPEC §1.3 and §1.4).

Kong 0.9 had one ``crud_helpers.lua`` behind every list, create, upsert, patch
and delete; so do we, so that ``/apis``, ``/consumers/{c}/key-auth`` and
``/oauth2_tokens`` cannot drift apart in pagination, rendering or write rules.
:func:`collection_methods` and :func:`entity_methods` are those helpers as the
handlers of a collection's path and of one row's path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kongtx.admin.routes.base import (
    NOT_FOUND,
    Call,
    Handler,
    HTTPError,
    Reply,
    is_uuid,
    lua_text,
)
from kongtx.store.interface import InvalidOffset, Row

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource

#: ``scope(call)``: the columns a collection's path forces (a consumer's credentials,
#: an API's plugins); 404 when the path names no such owner.
Scope = Callable[[Call], Awaitable[Mapping[str, Any]]]
#: ``find(call)``: the row a path names; 404 (or 400) when none.
Finder = Callable[[Call], Awaitable[Row]]

#: ``size`` when the query has none or a non-numeric one.
DEFAULT_PAGE_SIZE = 100


def render(value: Any) -> Any:
    """An entity as Kong rendered it: no null keys, empty arrays as ``{}`` (cjson)."""
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [render(v) for v in value] if value else {}
    return value


#: the largest ``size``: past any real listing, within every store's integers
MAX_PAGE_SIZE = 2**31 - 1


def page_size(raw: Any) -> int:
    """``size``: default 100, non-numeric (or not positive) -> 100, capped at 2^31-1."""
    if isinstance(raw, list):
        raw = raw[-1] if raw else None
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        size = int(raw.strip())
        if size > 0:
            return min(size, MAX_PAGE_SIZE)
    return DEFAULT_PAGE_SIZE


def next_url(call: Call, offset: str, size: int) -> str:
    """``http://<host>:<port><path>?offset=...&size=...`` (filters are not carried, as in Kong)."""
    request = call.request
    scheme = "https" if request.isSecure() else "http"
    host = request.getRequestHostname().decode("latin-1")
    port = request.getHost().port
    return f"{scheme}://{host}:{port}{call.path}?offset={quote(offset, safe='')}&size={size}"


async def paginate(
    admin: AdminResource, call: Call, collection: str, forced: Mapping[str, Any] | None = None
) -> Reply:
    """One page of ``collection``: query arguments are filters, ``forced`` wins over them."""
    filters = dict(call.query)
    size = page_size(filters.pop("size", None))
    raw_offset = filters.pop("offset", None)
    if isinstance(raw_offset, list):
        raw_offset = raw_offset[-1] if raw_offset else None
    offset = raw_offset if isinstance(raw_offset, str) and raw_offset != "" else None
    filters.update(forced or {})
    try:
        page = await admin.dao.find_page(collection, filters, size, offset)
    except InvalidOffset:
        # A token this store did not hand out (edited, or from another backend).
        raise HTTPError(400, {"offset": f"{offset} is not a valid offset"}) from None
    if not page.rows:
        return Reply(200, {"data": [], "total": 0})
    body: dict[str, Any] = {"data": [render(r) for r in page.rows], "total": page.total}
    if page.offset is not None:
        body["offset"] = page.offset
        body["next"] = next_url(call, page.offset, size)
    return Reply(200, body)


async def create(admin: AdminResource, collection: str, params: Mapping[str, Any]) -> Reply:
    """POST: insert, 201 and the whole entity."""
    row = await admin.dao.insert(collection, params)
    return Reply(201, render(row))


async def upsert(admin: AdminResource, collection: str, params: Mapping[str, Any]) -> Reply:
    """PUT: full replace when the body names the whole key, else a create.

    A key that matches no row is 404 ``{"message":"Not found"}`` and nothing is
    written: kongtx's documented difference from Kong's silent empty 200.
    """
    # Kong's PUT needs the whole primary key to replace; for plugins that is (id, name).
    key_fields = admin.dao.schemas[collection].replace_key
    if not all(params.get(f) not in (None, "") for f in key_fields):
        return await create(admin, collection, params)
    if "id" in key_fields and not is_uuid(params["id"]):
        raise HTTPError(400, {"id": f"{lua_text(params['id'])} is not a valid uuid"})
    key = {f: params[f] for f in key_fields}
    row = await admin.dao.update(collection, key, params, full=True)
    if row is None:
        raise HTTPError(404, NOT_FOUND)
    return Reply(200, render(row))


async def patch(
    admin: AdminResource, collection: str, row: Row, params: Mapping[str, Any]
) -> Reply:
    """PATCH: merge ``params`` into ``row``; empty body -> 400, vanished row -> 404."""
    if not params:
        raise HTTPError(400, {"message": "empty body"})
    updated = await admin.dao.update(collection, {"id": row["id"]}, params)
    if updated is None:
        raise HTTPError(404, NOT_FOUND)
    return Reply(200, render(updated))


async def delete(admin: AdminResource, collection: str, row: Row) -> Reply:
    """DELETE: 204 with an empty body, 404 when the row is already gone."""
    if not await admin.dao.delete(collection, {"id": row["id"]}):
        raise HTTPError(404, NOT_FOUND)
    return Reply(204)


async def find_one(
    admin: AdminResource,
    collection: str,
    segment: str,
    natural_key: str | None,
    scope: Mapping[str, Any] | None = None,
) -> Row:
    """The row a ``{name or id}`` path segment names, within ``scope``; 404 when none.

    A uuid-shaped segment is an ``id``; anything else is looked up by
    ``natural_key`` (``None``: only ids are accepted, and a non-uuid is 400).
    """
    if is_uuid(segment):
        filters: dict[str, Any] = {"id": segment.lower()}
    elif natural_key is None:
        raise HTTPError(400, {"message": f"{segment} is not a valid uuid"})
    else:
        filters = {natural_key: segment}
    filters.update(scope or {})
    rows = await admin.dao.find_all(collection, filters)
    if not rows:
        raise HTTPError(404, NOT_FOUND)
    return rows[0]


def collection_methods(
    admin: AdminResource, collection: str, scope: Scope | None = None
) -> dict[str, Handler]:
    """A collection path's GET (a page), POST (create) and PUT (upsert), within ``scope``."""

    async def forced(call: Call) -> Mapping[str, Any]:
        return {} if scope is None else await scope(call)

    async def list_rows(call: Call) -> Reply:
        return await paginate(admin, call, collection, await forced(call))

    async def create_row(call: Call) -> Reply:
        return await create(admin, collection, {**call.params, **await forced(call)})

    async def upsert_row(call: Call) -> Reply:
        return await upsert(admin, collection, {**call.params, **await forced(call)})

    return {"GET": list_rows, "POST": create_row, "PUT": upsert_row}


def entity_methods(admin: AdminResource, collection: str, find: Finder) -> dict[str, Handler]:
    """A row path's GET, PATCH and DELETE of the row ``find`` names."""

    async def get_row(call: Call) -> Reply:
        return Reply(200, render(await find(call)))

    async def patch_row(call: Call) -> Reply:
        return await patch(admin, collection, await find(call), call.params)

    async def delete_row(call: Call) -> Reply:
        return await delete(admin, collection, await find(call))

    return {"GET": get_row, "PATCH": patch_row, "DELETE": delete_row}
