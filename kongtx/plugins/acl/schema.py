# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""acl plugin config and the ``acls`` collection (SPEC §2.5, §4.4)."""

from __future__ import annotations

from typing import Any

from kongtx.errors import SchemaError
from kongtx.store.schemas import (
    CheckContext,
    EntitySchema,
    Field,
    Schema,
    UniqueTogether,
    credential_fields,
)


def _check(values: dict[str, Any], ctx: CheckContext) -> str | None:
    white, black = values.get("whitelist") or [], values.get("blacklist") or []
    if white and black:
        return "You cannot set both a whitelist and a blacklist"
    if not white and not black:
        return "You must set at least a whitelist or blacklist"
    return None


SCHEMA = Schema(
    no_consumer=True,
    fields={"whitelist": Field(type="array"), "blacklist": Field(type="array")},
    self_check=_check,
)


def _group_exists() -> Exception:
    return SchemaError({"group": "ACL group already exist for this consumer"})


ACLS = EntitySchema(
    name="acls",
    fields=credential_fields(
        {
            "group": Field(type="string", required=True),
        },
    ),
    unique_together=(UniqueTogether(("consumer_id", "group"), _group_exists),),
)
