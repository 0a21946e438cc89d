# -*- test-case-name: tests.unit.test_declarative -*-
"""``kong config db_import`` / ``db_export``: a declarative document into and out of a datastore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.dao import DAO
from kongtx.declarative.document import FORMAT_VERSION, as_text
from kongtx.declarative.load import (
    LoadingDAO,
    LoadResult,
    credential_collections,
    load_document,
    validate_document,
)
from kongtx.store.interface import Row
from kongtx.store.schemas import EntitySchema


async def import_document(document: Mapping[str, Any], dao: DAO) -> LoadResult:
    """``kong config db_import``: validate all of ``document``, then write it through ``dao``.

    Nothing is written unless the whole document is valid on its own; conflicts
    with rows already in the datastore then stop at the first one.  Entities
    whose id already exists are replaced, so importing a file twice is harmless.
    """
    await validate_document(document, dao)
    return await load_document(
        document,
        LoadingDAO.like(dao, dao.store, listeners=True),
        upsert=True,
        stop_at_first=True,
    )


def _entity(schema: EntitySchema, row: Row, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row as a document entry: schema field order, NULLs and implied keys left out."""
    return {
        name: row[name]
        for name in schema.fields
        if name in row and row[name] is not None and name not in drop
    }


def _order(row: Row, *keys: str) -> tuple[str, ...]:
    return tuple(as_text(row.get(k)) for k in keys)


async def export_document(dao: DAO) -> dict[str, Any]:
    """Everything the datastore holds, as a document (stable order: natural keys, then ids).

    A plugin on one API only is nested under that API, one on one consumer only
    under that consumer; global plugins and API + consumer pairs are top level,
    naming ``api_id``/``consumer_id``.
    """
    schemas = dao.schemas
    credentials = credential_collections(schemas)
    apis = sorted(await dao.find_all("apis", {}), key=lambda r: _order(r, "name", "id"))
    consumers = sorted(
        await dao.find_all("consumers", {}),
        key=lambda r: _order(r, "username", "custom_id", "id"),
    )
    plugins = sorted(
        await dao.find_all("plugins", {}),
        key=lambda r: _order(r, "name", "api_id", "consumer_id", "id"),
    )
    by_api: dict[str, list[Row]] = {}
    by_consumer: dict[str, list[Row]] = {}
    top: list[Row] = []
    for p in plugins:
        if p.get("api_id") and not p.get("consumer_id"):
            by_api.setdefault(p["api_id"], []).append(p)
        elif p.get("consumer_id") and not p.get("api_id"):
            by_consumer.setdefault(p["consumer_id"], []).append(p)
        else:
            top.append(p)
    document: dict[str, Any] = {"_format_version": FORMAT_VERSION}
    out_apis = []
    for api in apis:
        entry = _entity(schemas["apis"], api)
        nested = [_entity(schemas["plugins"], p, ("api_id",)) for p in by_api.get(api["id"], [])]
        if nested:
            entry["plugins"] = nested
        out_apis.append(entry)
    out_consumers = []
    for consumer in consumers:
        entry = _entity(schemas["consumers"], consumer)
        for collection, key in credentials.items():
            rows = await dao.find_all(collection, {"consumer_id": consumer["id"]})
            rows.sort(key=lambda r, k=key: _order(r, k, "id"))  # type: ignore[misc]
            if rows:
                entry[collection] = [
                    _entity(schemas[collection], r, ("consumer_id",)) for r in rows
                ]
        nested = [
            _entity(schemas["plugins"], p, ("consumer_id",))
            for p in by_consumer.get(consumer["id"], [])
        ]
        if nested:
            entry["plugins"] = nested
        out_consumers.append(entry)
    if out_apis:
        document["apis"] = out_apis
    if out_consumers:
        document["consumers"] = out_consumers
    if top:
        document["plugins"] = [_entity(schemas["plugins"], p) for p in top]
    out_upstreams = []
    for upstream in sorted(await dao.find_all("upstreams", {}), key=lambda r: _order(r, "name")):
        entry = _entity(schemas["upstreams"], upstream)
        targets = await dao.find_all("targets", {"upstream_id": upstream["id"]})
        targets.sort(key=lambda r: _order(r, "target", "id"))
        if targets:
            entry["targets"] = [_entity(schemas["targets"], t, ("upstream_id",)) for t in targets]
        out_upstreams.append(entry)
    if out_upstreams:
        document["upstreams"] = out_upstreams
    return document
