# -*- test-case-name: tests.unit.test_declarative -*-
"""``/config``: the whole configuration as one declarative document (docs/dbless.md).

``GET /config`` answers the configuration in force as a document (any mode: it
is also a quick export).  ``POST /config`` replaces the whole configuration of a
DB-less node (``database = off``) atomically: all of the document is validated
into a new in-memory store first, and only a fully valid one is swapped in;
otherwise 400 with every error, one line each, and nothing changes.

The body is the document itself, as JSON (``application/json``) or YAML (any
other type: ``application/x-yaml``, ``text/yaml``...), or a form /
multipart field ``config`` holding the document text, as Kong 1.x accepted it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kongtx.admin.forms import read_body
from kongtx.admin.routes.base import Call, HTTPError, Reply, Route, route
from kongtx.declarative import DeclarativeError, export_document, parse

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource

#: ``POST /config`` on a node that has a datastore (Kong 1.x's words).
NOT_DBLESS = {
    "message": "this endpoint is only available when Kong is configured to not use a database"
}


def document_from(call: Call) -> dict[str, Any]:
    """The declarative document a ``POST /config`` carries (see the module docstring)."""
    raw_ct = call.request.getHeader(b"content-type")
    kind = (raw_ct or b"").decode("latin-1").lower()
    if "application/x-www-form-urlencoded" in kind or "multipart/form-data" in kind:
        text = call.body.get("config")
        if not isinstance(text, str) or not text.strip():
            raise HTTPError(400, {"message": "expected a declarative configuration in 'config'"})
        return parse(text, "config")
    raw = read_body(call.request.content)
    if "application/json" in kind:
        body = json.loads(raw.decode("utf-8"))  # parse_body already refused bad JSON
        if isinstance(body, dict) and set(body) == {"config"} and isinstance(body["config"], str):
            return parse(body["config"], "config")
        if not isinstance(body, dict):
            raise HTTPError(400, {"message": "Cannot parse JSON body"})
        return body
    return parse(raw, "config")


def routes(admin: AdminResource) -> list[Route]:
    """``GET /config`` and ``POST /config``."""

    async def get_config(call: Call) -> Reply:
        if admin.declarative is not None:
            return Reply(200, await admin.declarative.export())
        return Reply(200, await export_document(admin.dao))

    async def post_config(call: Call) -> Reply:
        state = admin.declarative
        if state is None:
            raise HTTPError(400, NOT_DBLESS)
        try:
            document = document_from(call)
            await state.replace(document)
        except DeclarativeError as e:
            raise HTTPError(
                400, {"message": "declarative config is invalid", "errors": e.errors}
            ) from None
        return Reply(201, await state.export())

    return [route("/config", GET=get_config, POST=post_config)]
