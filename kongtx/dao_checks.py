# -*- test-case-name: tests.unit.test_dao -*-
"""What the DAO checks of a caller's keys, rows and list filters against a schema.

Pure functions of a schema and the input (no store, no clock): uuids lower-cased
and checked (SPEC §1.2's ``<value> is not a valid uuid``), keys and immutable
fields that a PUT/PATCH must not change (SPEC §1.4), list filters validated and
coerced, and Kong 1.1's ``?tags=`` syntax.  kongtx.dao runs them around every store call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.errors import EntityError, ForeignKeyError, SchemaError
from kongtx.store.rules import TAGS_COLUMN, TagFilter
from kongtx.store.schemas import (
    INVALID,
    MAX_FILTER_TAGS,
    EntitySchema,
    Errors,
    Schema,
    coerce,
    is_uuid,
    tag_problem,
)


def is_id(schema: Schema, column: str) -> bool:
    """Whether ``column`` is one of the schema's uuid fields."""
    f = schema.fields.get(column)
    return f is not None and f.type == "id"


def lower_ids(schema: Schema, key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` with its uuid values lower-cased (the store keeps them so)."""
    return {c: v.lower() if is_id(schema, c) and isinstance(v, str) else v for c, v in key.items()}


def check_key_uuids(schema: Schema, key: Mapping[str, Any]) -> None:
    """A uuid key that is not a uuid: 400 ``{"message": "<value> is not a valid uuid"}``."""
    for column, value in key.items():
        if is_id(schema, column) and value is not None and not is_uuid(value):
            raise EntityError(f"{value} is not a valid uuid")


def check_pk_unchanged(
    schema: EntitySchema, old: Mapping[str, Any], params: Mapping[str, Any]
) -> None:
    """Keys and required immutable fields (plugin ``name``, ``created_at``) never change.

    Checked before merging so that, say, a plugin's new name does not first
    get its config validated against the wrong plugin's schema.
    """
    errors: Errors = {}
    for column, f in schema.fields.items():
        given = params.get(column)
        if f.primary_key or not (f.immutable and f.required) or given is None:
            continue
        if coerce(f.type, given) != old.get(column):
            errors[column] = f"{column} cannot be updated"
    pk = {c: old[c] for c in schema.primary_key}
    for column, value in pk.items():
        given = params.get(column)
        if given is None:
            continue
        same = (
            isinstance(given, str) and given.strip().lower() == str(value).lower()
            if is_id(schema, column)
            else given == value
        )
        if not same:
            errors[column] = f"{column} cannot be updated"
    if errors:
        raise SchemaError(errors)


def normalise(schema: Schema, row: dict[str, Any]) -> dict[str, Any]:
    """Lower-case uuids; a foreign key that is no uuid can name no row (404)."""
    for name, f in schema.fields.items():
        value = row.get(name)
        if f.type != "id" or value is None:
            continue
        if is_uuid(value):
            row[name] = value.lower()
        elif f.foreign is not None:
            raise ForeignKeyError(name, value)
        elif f.primary_key:
            raise EntityError(f"{value} is not a valid uuid")
    return row


def list_filters(schema: Schema, filters: Mapping[str, Any]) -> dict[str, Any]:
    """Validate list filters (SPEC §1.2): known columns, uuids, values coerced to the type."""
    errors: Errors = {}
    clean: dict[str, Any] = {}
    for column, value in filters.items():
        f = schema.fields.get(column)
        if f is None:
            errors[column] = "unknown field"
            continue
        if column == TAGS_COLUMN and f.type == "array":
            try:
                tag_filter = parse_tag_filter(value)
            except ValueError as e:
                errors[column] = str(e)
                continue
            if tag_filter is not None:
                clean[column] = tag_filter
            continue
        if value is None:
            clean[column] = None
            continue
        if f.type == "id":
            if not is_uuid(value):
                errors[column] = f"{value} is not a valid uuid"
                continue
            clean[column] = value.lower()
            continue
        if f.type in ("boolean", "number", "timestamp", "string", "url"):
            coerced = coerce(f.type, value)
            if coerced is INVALID:
                errors[column] = f"{column} is not a {f.type}"
                continue
            clean[column] = coerced
            continue
        clean[column] = value
    if errors:
        raise SchemaError(errors)
    return clean


def parse_tag_filter(value: Any) -> TagFilter | None:
    """A ``?tags=`` query value as Kong 1.1 reads it; ``None`` for an empty one.

    ``a,b`` wants every listed tag, ``a/b`` any of them, ``a`` that one (a
    repeated argument counts by its first value, as in Kong).  Raises
    ``ValueError`` with Kong's reason: more than five tags, or a tag that breaks
    the tag rule (which is also what mixing ``,`` and ``/`` gives).
    """
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("invalid filter syntax")
    if "," in value:
        tags, mode = value.split(","), "all"
    elif "/" in value:
        tags, mode = value.split("/"), "any"
    else:
        tags, mode = [value], "all"
    if len(tags) > MAX_FILTER_TAGS:
        raise ValueError(f"cannot query more than {MAX_FILTER_TAGS} tags")
    if any(tag_problem(t) is not None for t in tags):
        raise ValueError("must only contain printable ascii (except `,` and `/`)")
    return TagFilter(tuple(tags), "all" if mode == "all" else "any")
