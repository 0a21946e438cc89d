# -*- test-case-name: tests.unit.test_schemas -*-
"""The validator: coercion, validation, PATCH merging and JSON rendering of schemas.

Validation runs in three modes: ``insert`` (defaults applied, required fields
checked), ``full`` (PUT replace: like insert but the generated columns must be
supplied) and ``patch`` (the DAO merges the stored row under the patch first;
defaults are not re-applied and only the patched keys face the required and
immutable rules).  Like Kong, an entity-level ``self_check`` runs only once every
field passed.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kongtx.errors import EntityError, SchemaError
from kongtx.store.schemas.model import CheckContext, Errors, Field, FieldType, Mode, Schema

# --------------------------------------------------------------------------- helpers


def add_error(errors: Errors, name: str, message: str | list[str]) -> None:
    """Record ``message`` for ``name``; a second message turns the value into a list."""
    new = [message] if isinstance(message, str) else list(message)
    if not new:
        return
    old = errors.get(name)
    if old is None:
        errors[name] = new[0] if len(new) == 1 else new
    elif isinstance(old, str):
        errors[name] = [old, *new]
    else:
        old.extend(new)


def _a(ftype: str) -> str:
    return "an array" if ftype == "array" else f"a {ftype}"


def to_number(value: Any) -> int | float | None:
    """``value`` as a JSON number, or ``None``; integral floats become ints."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return to_number(parsed)
    return None


def parse_url(value: str) -> tuple[str, str] | None:
    """``(scheme, host)`` of an absolute URL, or ``None`` when it has no scheme or host."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    return parts.scheme.lower(), host


#: what :func:`coerce` returns for a value that cannot be read as the field type
INVALID: Any = object()


def coerce(ftype: FieldType, value: Any) -> Any:
    """Coerce a body value to ``ftype`` (SPEC §1.1); return ``INVALID`` when it cannot be."""
    if isinstance(value, str):
        value = value.strip()
    if ftype in ("string", "id"):
        return value if isinstance(value, str) else INVALID
    if ftype == "url":
        if isinstance(value, str) and parse_url(value) is not None:
            return value
        return INVALID
    if ftype == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return INVALID
    if ftype in ("number", "timestamp"):
        number = to_number(value)
        return INVALID if number is None else number
    if ftype == "array":
        if isinstance(value, list):
            return list(value)
        if isinstance(value, str):
            return [] if value == "" else [part.strip() for part in value.split(",")]
        if isinstance(value, dict):
            # an empty JSON object is an empty Lua table; indexed form keys a[1]=x
            if not value:
                return []
            if all(isinstance(k, str) and k.isdigit() for k in value):
                return [value[k] for k in sorted(value, key=int)]
        return INVALID
    if ftype == "table":
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, list) and not value:
            return {}
        return INVALID
    raise ValueError(f"unknown field type {ftype!r}")


def _resolve_sub(f: Field, values: Mapping[str, Any]) -> Schema | str | None:
    if f.schema is None:
        return None
    if isinstance(f.schema, Schema):
        return f.schema
    result: Schema | str | None = f.schema(values)
    return result


# --------------------------------------------------------------------------- validator


def validate(
    schema: Schema,
    values: Mapping[str, Any],
    mode: Mode = "insert",
    *,
    patch: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and coerce ``values`` against ``schema``; return the new values.

    Raises :class:`SchemaError` (field map) or :class:`EntityError` (an entity-level
    message).  In ``patch`` mode ``values`` is the merged row and ``patch`` the keys
    the client sent (only those face the required and immutable rules).  The
    result has a key for every schema field (``None`` when unset).
    """
    result, errors, message = _validate(schema, values, mode, patch, old)
    if errors:
        raise SchemaError(errors)
    if message is not None:
        raise EntityError(message)
    return result


def _validate(
    schema: Schema,
    values: Mapping[str, Any],
    mode: Mode,
    patch: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Errors, str | None]:
    if schema.flexible:
        return _validate_flexible(schema, values, mode, patch, old)
    errors: Errors = {}
    t: dict[str, Any] = dict(values)

    def sent(name: str) -> bool:
        """Whether the client supplied ``name`` (patch: the patch keys; else non-null values)."""
        return values.get(name) is not None if patch is None else name in patch

    # 1. types: coerce what was given (defaults below may depend on coerced values)
    for name, f in schema.fields.items():
        v = t.get(name)
        if v is None:
            t[name] = None
            continue
        coerced = coerce(f.type, v)
        if coerced is INVALID:
            add_error(errors, name, f"{name} is not {_a(f.type)}")
            t[name] = None
        elif f.type == "id" and coerced == "":
            # a blank form value for a reference means "none" (a global plugin)
            t[name] = None
        else:
            t[name] = coerced
            if isinstance(coerced, list):
                t[name] = [x.strip() if isinstance(x, str) else x for x in coerced]

    # 2. defaults (never on patch) and generated values
    for name, f in schema.fields.items():
        if name in errors:
            continue
        if mode != "patch" and t[name] is None and f.default is not None:
            t[name] = f.default(t) if callable(f.default) else copy.deepcopy(f.default)
        if f.generate is not None and (t[name] is None or t[name] == ""):
            if mode != "patch" or (sent(name) and t[name] == ""):
                t[name] = f.generate()

    # 3. every other rule, in Kong's order
    for name, f in schema.fields.items():
        if name in errors:
            continue
        v = t[name]
        old_v = old.get(name) if old is not None else None
        if mode != "insert" and old is not None and sent(name) and f.immutable:
            if not f.required:
                if mode == "patch" or v != old_v:
                    add_error(errors, name, f"{name} cannot be updated")
            elif v is not None and v != old_v:
                add_error(errors, name, f"{name} cannot be updated")
        if v is not None and f.enum is not None:
            wrong = None
            if isinstance(v, list):
                wrong = next((x for x in v if x not in f.enum), None)
            elif v not in f.enum:
                wrong = v
            if wrong is not None:
                allowed = '", "'.join(f.enum)
                add_error(
                    errors, name, f'"{wrong}" is not allowed. Allowed values are: "{allowed}"'
                )
        if v is not None and f.regex is not None and isinstance(v, str):
            if re.search(f.regex, v) is None:
                add_error(errors, name, f"{name} has an invalid value")
        if f.type == "table":
            sub = _resolve_sub(f, t)
            if isinstance(sub, str):
                add_error(errors, name, sub)
            elif sub is not None:
                if v is None and mode != "patch":
                    v = t[name] = {}
                if isinstance(v, Mapping):
                    sub_patch = patch.get(name) if patch is not None else None
                    sub_old = old_v if isinstance(old_v, Mapping) else None
                    sub_t, sub_errors, sub_msg = _validate(
                        sub,
                        v,
                        mode,
                        sub_patch
                        if isinstance(sub_patch, Mapping)
                        else ({} if patch is not None else None),
                        sub_old,
                    )
                    # like a Lua table, a stored sub-table holds no nulls
                    t[name] = {k: x for k, x in sub_t.items() if x is not None}
                    for k, msg in sub_errors.items():
                        add_error(errors, f"{name}.{k}", msg)
                    if sub_msg is not None:
                        add_error(errors, name, sub_msg)
        if f.required and (mode != "patch" or sent(name)):
            if not (f.dao_insert_value and mode == "insert") and (v is None or v == ""):
                add_error(errors, name, f"{name} is required")
                continue
        if v is not None and f.func is not None and name not in errors:
            problem = f.func(v, t)
            if problem:
                add_error(errors, name, problem)

    # 4. unknown fields
    for name in values:
        if name not in schema.fields:
            add_error(errors, name, f"{name} is an unknown field")
            t.pop(name, None)

    if errors or schema.self_check is None:
        return t, errors, None
    checked = schema.self_check(t, CheckContext(mode, old))
    if checked is None:
        return t, errors, None
    if isinstance(checked, str):
        return t, errors, checked
    for k, msg in checked.items():
        add_error(errors, k, msg)
    return t, errors, None


def _validate_flexible(
    schema: Schema,
    values: Mapping[str, Any],
    mode: Mode,
    patch: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Errors, str | None]:
    """A table whose every key is free and every value a table checked against ``fields``."""
    errors: Errors = {}
    t: dict[str, Any] = {}
    inner = Schema(fields=schema.fields)
    for key, v in values.items():
        coerced = coerce("table", v)
        if coerced is INVALID:
            add_error(errors, key, f"{key} is not a table")
            continue
        sub_patch = patch.get(key) if patch is not None else None
        sub_old = old.get(key) if old is not None else None
        sub_t, sub_errors, _ = _validate(
            inner,
            coerced,
            mode,
            sub_patch if isinstance(sub_patch, Mapping) else ({} if patch is not None else None),
            sub_old if isinstance(sub_old, Mapping) else None,
        )
        t[key] = {k: x for k, x in sub_t.items() if x is not None}
        for k, msg in sub_errors.items():
            add_error(errors, f"{key}.{k}", msg)
    if errors or schema.self_check is None:
        return t, errors, None
    checked = schema.self_check(t, CheckContext(mode, old))
    if isinstance(checked, str):
        return t, errors, checked
    for k, msg in (checked or {}).items():
        add_error(errors, k, msg)
    return t, errors, None


def merge_patch(schema: Schema, old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The stored row with ``patch`` laid over it (SPEC §1.4 PATCH).

    A ``table`` field with a sub-schema is merged key by key with the stored table,
    one level per sub-schema, so ``config.minute=10`` keeps the rest of the config.
    """
    merged = copy.deepcopy(dict(old))
    for name, value in patch.items():
        previous = merged.get(name)
        sub: Schema | str | None = None
        if schema.flexible:
            sub = Schema(fields=schema.fields)
        else:
            f = schema.fields.get(name)
            if f is not None and f.type == "table":
                sub = _resolve_sub(f, {**merged, **patch})
        if isinstance(sub, Schema) and isinstance(value, Mapping) and isinstance(previous, Mapping):
            merged[name] = merge_patch(sub, previous, value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- rendering


def schema_to_json(schema: Schema) -> dict[str, Any]:
    """The JSON form of a schema for ``GET /plugins/schema/{name}`` (SPEC §1.5).

    Every function (defaults, ``func``, ``self_check``) is rendered as the string
    ``"function"``, as Kong does.
    """
    out: dict[str, Any] = {"fields": {name: _field_to_json(f) for name, f in schema.fields.items()}}
    if schema.no_consumer:
        out["no_consumer"] = True
    if schema.flexible:
        out["flexible"] = True
    if schema.self_check is not None:
        out["self_check"] = "function"
    return out


def _field_to_json(f: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": f.type}
    for flag in ("required", "unique", "immutable", "dao_insert_value", "primary_key"):
        if getattr(f, flag):
            out[flag] = True
    if f.default is not None:
        out["default"] = "function" if callable(f.default) else copy.deepcopy(f.default)
    if f.enum is not None:
        out["enum"] = list(f.enum)
    if f.regex is not None:
        out["regex"] = f.regex
    if f.func is not None or f.generate is not None:
        out["func"] = "function"
    if f.foreign is not None:
        out["foreign"] = f.foreign
    if isinstance(f.schema, Schema):
        out["schema"] = schema_to_json(f.schema)
    elif f.schema is not None:
        out["schema"] = "function"
    return out
