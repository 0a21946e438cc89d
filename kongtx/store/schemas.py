# -*- test-case-name: tests.unit.test_schemas -*-
"""Entity and plugin-config schemas, and the validator that enforces them (SPEC §1.2, §2, §4).

Why a declarative schema: every rule of Kong 0.9 (types, defaults, enums, custom
checks, messages to the letter) must hold for Admin writes on every backend, and
``GET /plugins/schema/{name}`` renders the same object as JSON.  One description
serves validation, defaults and rendering, so they cannot disagree.

Validation runs in three modes: ``insert`` (defaults applied, required fields
checked), ``full`` (PUT replace: like insert but the generated columns must be
supplied) and ``patch`` (the DAO merges the stored row under the patch first;
defaults are not re-applied and only the patched keys face the required and
immutable rules).  Like Kong, an entity-level ``self_check`` runs only once every
field passed.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from kongtx.errors import ConflictError, EntityError, SchemaError
from kongtx.store.tables import TAGGED, TAGS_COLUMN

FieldType = Literal["id", "timestamp", "string", "boolean", "number", "array", "table", "url"]
Mode = Literal["insert", "patch", "full"]
Errors = dict[str, str | list[str]]

#: A custom check: gets the coerced value and the whole (mutable) values dict; returns
#: ``None`` when fine, else a message (or several).  It may normalise ``values`` in place.
FieldFunc = Callable[[Any, dict[str, Any]], str | list[str] | None]
#: An entity/config check run once every field is valid: ``None``, a message or a field map.
SelfCheck = Callable[[dict[str, Any], "CheckContext"], str | Errors | None]

UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


def is_uuid(value: Any) -> bool:
    """Whether ``value`` is a uuid string (SPEC §1.4's regex, case-insensitive)."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


def random_hex() -> str:
    """32 random hex characters (a uuid4 without dashes), Kong's ``utils.random_string``."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CheckContext:
    """What a self_check may know besides the values: the mode, and the stored row on update."""

    mode: Mode
    old: Mapping[str, Any] | None = None

    @property
    def is_update(self) -> bool:
        return self.mode != "insert"


@dataclass(frozen=True, eq=False)
class Field:
    """One field and every rule on it (SPEC §2 legend).

    ``default`` is a value (deep-copied) or a callable taking the values dict.
    ``generate`` makes a value whenever the field is missing or blank (random keys
    and secrets); unlike a default it also replaces a blank value on update.
    ``foreign`` is ``"<collection>:<column>"``; ``dao_insert_value`` marks columns
    the DAO generates on insert (``id``, ``created_at``).
    """

    type: FieldType
    required: bool = False
    default: Any = None
    unique: bool = False
    immutable: bool = False
    enum: tuple[str, ...] | None = None
    regex: str | None = None
    func: FieldFunc | None = None
    #: a ``table`` field's sub-schema, or a function choosing it from the values (plugin
    #: ``config`` depends on ``name``) that returns a message when there is none
    schema: Any = None
    foreign: str | None = None
    dao_insert_value: bool = False
    primary_key: bool = False
    generate: Callable[[], str] | None = None


@dataclass(frozen=True, eq=False)
class Schema:
    """A set of fields plus an optional ``self_check``.

    ``flexible`` tables (response-ratelimiting's ``limits``) hold any key, each
    value being a table checked against ``fields``.  ``no_consumer`` marks a plugin
    config schema whose plugin cannot be configured per consumer.
    """

    fields: Mapping[str, Field]
    self_check: SelfCheck | None = None
    no_consumer: bool = False
    flexible: bool = False


@dataclass(frozen=True)
class UniqueTogether:
    """A multi-column rule the store does not enforce (checked by the DAO before writing).

    ``error`` builds the exception raised when another row already has the same
    values; ``on_update`` says whether updates are checked too.
    """

    columns: tuple[str, ...]
    error: Callable[[], Exception]
    on_update: bool = True
    #: builds the error from the refused row instead (a 409 naming the value, targets)
    error_for_row: Callable[[Mapping[str, Any]], Exception] | None = None

    def refuse(self, row: Mapping[str, Any]) -> Exception:
        """The exception to raise for ``row``, which collides with a stored row."""
        if self.error_for_row is not None:
            return self.error_for_row(row)
        return self.error()


#: Runs a blocking function off the reactor thread and awaits its result.
RunInThread = Callable[[Callable[[], Any]], Awaitable[Any]]
#: Hook run by the DAO after validation, before writing (``run_in_thread`` given for
#: slow work such as password hashing): ``(row, old_row, run_in_thread)``; edits ``row``.
BeforeWrite = Callable[[dict[str, Any], Mapping[str, Any] | None, RunInThread], Awaitable[None]]


@dataclass(frozen=True, eq=False)
class EntitySchema(Schema):
    """A collection's schema: a :class:`Schema` plus what the DAO needs to store rows."""

    name: str = ""
    primary_key: tuple[str, ...] = ("id",)
    #: the key a PUT must carry to replace a row (plugins: (id, name), SPEC §1.4)
    put_key: tuple[str, ...] = ()
    unique_together: tuple[UniqueTogether, ...] = ()
    before_write: BeforeWrite | None = None
    #: seconds a new row lives (oauth2 codes/tokens), from the row; None = forever
    ttl: Callable[[Mapping[str, Any]], int | None] | None = None

    def __post_init__(self) -> None:
        # Kong 1.1: every entity whose table keeps tags takes a ``tags`` field, the
        # plugin-owned credentials included, without each plugin's schema repeating it.
        if self.name in TAGGED and TAGS_COLUMN not in self.fields:
            object.__setattr__(self, "fields", {**self.fields, TAGS_COLUMN: tags_field()})

    @property
    def replace_key(self) -> tuple[str, ...]:
        return self.put_key or self.primary_key


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


def _number(value: Any) -> int | float | None:
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
        return _number(parsed)
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
        number = _number(value)
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


# --------------------------------------------------------------------------- shared pieces


def id_field() -> Field:
    """The generated uuid primary key."""
    return Field(type="id", dao_insert_value=True, primary_key=True)


def created_at_field() -> Field:
    """The generated epoch-ms creation time: required on PUT, never changed (SPEC §1.4)."""
    return Field(type="timestamp", dao_insert_value=True, immutable=True, required=True)


def consumer_fk() -> Field:
    """The consumer a credential belongs to."""
    return Field(type="id", required=True, foreign="consumers:id")


# --------------------------------------------------------------------------- tags (Kong 1.1)

#: Kong's tag rule: printable ASCII (33-126) except ``,`` and ``/`` (the filter separators).
_TAG_RE = re.compile(r"^[!-+\-.0-~]+$")
#: Kong 1.1 refuses a filter naming more tags than this.
MAX_FILTER_TAGS = 5


def tag_problem(tag: Any) -> str | None:
    """Kong's message for a tag that breaks its rule, or ``None`` for a good tag."""
    if isinstance(tag, str) and _TAG_RE.match(tag):
        return None
    shown = tag if isinstance(tag, str) else str(tag)
    return f"invalid tag '{shown}': expected printable ascii (except `,` and `/`)"


def check_tags(value: Any, values: dict[str, Any]) -> str | list[str] | None:
    """Every tag valid; duplicates dropped (Kong's ``set``); an empty list means none."""
    problems = [p for p in (tag_problem(t) for t in value) if p is not None]
    if problems:
        return problems
    values["tags"] = list(dict.fromkeys(value)) or None
    return None


def tags_field() -> Field:
    """The optional ``tags`` array of an entity (Kong 1.1)."""
    return Field(type="array", func=check_tags)


# --------------------------------------------------------------------------- apis (§2.1)

_HOST_RE = re.compile(r"^[0-9A-Za-z._-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-~]*$")
_PATH_CHARS_RE = re.compile(r"^[A-Za-z0-9._~/%-]*$")
_HEX2_RE = re.compile(r"^[0-9A-Fa-f]{2}$")


def _blank_to_none(name: str, value: Any, values: dict[str, Any]) -> bool:
    """Treat a blank host/path as unset, so two APIs without one never collide on ''."""
    if value == "":
        values[name] = None
        return True
    return False


def check_request_host(value: Any, values: dict[str, Any]) -> str | None:
    """SPEC §2.1 request_host rules (wildcards, labels, characters)."""
    if _blank_to_none("request_host", value, values):
        return None
    host = value
    stars = host.count("*")
    if stars > 1:
        return f"Only one wildcard is allowed: {host}"
    if stars == 1:
        if host.startswith("*."):
            rest = host[2:]
        elif host.endswith(".*") and len(host) > 2:
            rest = host[:-2]
        else:
            return f"Invalid wildcard placement: {host}"
        probe = rest
    else:
        probe = host
    if not _HOST_RE.match(probe) or any(
        label == "" or label.endswith("-") for label in probe.split(".")
    ):
        return f"Invalid value: {host}"
    return None


def check_request_path(value: Any, values: dict[str, Any]) -> str | None:
    """SPEC §2.1 request_path rules, in order; strips one trailing slash."""
    if _blank_to_none("request_path", value, values):
        return None
    path = value
    if not path.startswith("/"):
        return f"must be prefixed with slash: '{path}'"
    if "//" in path:
        return f"invalid: '{path}'"
    if not _PATH_CHARS_RE.match(path):
        return "must only contain alphanumeric and '., -, _, ~, /, %' characters"
    for i, ch in enumerate(path):
        if ch == "%" and not _HEX2_RE.match(path[i + 1 : i + 3]):
            return f"must use proper encoding; '{path[i : i + 3]}' is invalid"
    if len(path) > 1 and path.endswith("/"):
        values["request_path"] = path[:-1]
    return None


def check_upstream_url(value: Any, values: dict[str, Any]) -> str | None:
    """Only http and https upstreams can be proxied."""
    parsed = parse_url(value)
    if parsed is None or parsed[0] not in ("http", "https"):
        return "Supported protocols are HTTP and HTTPS"
    return None


def check_api_name(value: Any, values: dict[str, Any]) -> str | None:
    """API names end up in URLs and statsd metric names."""
    if not _NAME_RE.match(value):
        return "name must only contain alphanumeric and '., -, _, ~' characters"
    return None


def default_api_name(values: Mapping[str, Any]) -> str | None:
    """request_host, else request_path without its leading '/' and with '/' -> '-' (SPEC §2.1)."""
    host = values.get("request_host")
    path = values.get("request_path")
    if isinstance(host, str) and host:
        name = host
    elif isinstance(path, str) and path:
        stripped = path[:-1] if len(path) > 1 and path.endswith("/") else path
        name = (
            stripped[1:].replace("/", "-")
            if stripped.startswith("/")
            else stripped.replace("/", "-")
        )
    else:
        return None
    return re.sub(r"[^\w.\-~]", "-", name, flags=re.ASCII)


def _check_api(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    host = values.get("request_host") or ""
    path = values.get("request_path") or ""
    if not host.strip() and not path.strip():
        msg = "At least a 'request_host' or a 'request_path' must be specified"
        return {"request_host": msg, "request_path": msg}
    return None


APIS = EntitySchema(
    name="apis",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "name": Field(type="string", unique=True, default=default_api_name, func=check_api_name),
        "request_host": Field(type="string", unique=True, func=check_request_host),
        "request_path": Field(type="string", unique=True, func=check_request_path),
        "strip_request_path": Field(type="boolean", default=False),
        "preserve_host": Field(type="boolean", default=False),
        "upstream_url": Field(type="url", required=True, func=check_upstream_url),
        "tags": tags_field(),
    },
    self_check=_check_api,
)


# --------------------------------------------------------------------------- consumers (§2.2)


def _check_consumer(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    username = values.get("username") or ""
    custom_id = values.get("custom_id") or ""
    if not username.strip() and not custom_id.strip():
        msg = "At least a 'custom_id' or a 'username' must be specified"
        return {"custom_id": msg, "username": msg}
    return None


CONSUMERS = EntitySchema(
    name="consumers",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "custom_id": Field(type="string", unique=True),
        "username": Field(type="string", unique=True),
        "tags": tags_field(),
    },
    self_check=_check_consumer,
)


# --------------------------------------------------------------------------- nodes (§2.4)

NODES = EntitySchema(
    name="nodes",
    primary_key=("name",),
    fields={
        "name": Field(type="string", primary_key=True, required=True),
        "cluster_listening_address": Field(type="string", required=True),
        "created_at": created_at_field(),
    },
)


# --------------------------------------------------------------------------- upstreams (Kong 1.x)
#
# Load balancing (issue 9): an upstream is a virtual host name an API's upstream_url
# may use, its targets the host:port pairs balanced over.  Kong 1.x's rules and
# messages where it had them; docs/admin-api.md lists every message.

#: A hostname: dot-separated labels of letters, digits and '-' (not at a label's ends).
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
#: Kong's header-name rule for hash_on_header / hash_fallback_header.
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: The port a target without one gets (Kong's default).
DEFAULT_TARGET_PORT = 8000
HASH_ON = ("none", "consumer", "ip", "header")
ALGORITHMS = ("round-robin", "consistent-hashing", "least-connections")
_INT_MAX = 2**31


def is_hostname(value: str) -> bool:
    """Whether ``value`` is a DNS name (letters, digits, '-', '.'), not an IPv4 address."""
    if not value or len(value) > 253:
        return False
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if not all(_LABEL_RE.match(label) and len(label) <= 63 for label in labels):
        return False
    # all-numeric labels read as an IPv4 address, not a name (Kong's hostname_type)
    return not all(label.isdigit() for label in labels)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def split_host_port(value: str) -> tuple[str, int | None, str] | None:
    """``(host, port or None, kind)`` of ``host[:port]`` (kind ``name``/``ipv4``/``ipv6``).

    IPv6 addresses take brackets when they carry a port (``[::1]:80``); a bare
    ``::1`` is an address without one.  ``None`` when it is none of these, or the
    port is not 1..65535.
    """
    port_text: str | None = None
    if value.startswith("["):
        m = re.match(r"^\[([^\]]+)\](?::([0-9]+))?$", value)
        if m is None:
            return None
        host, port_text = m.group(1), m.group(2)
        address = _ip(host)
        if not isinstance(address, ipaddress.IPv6Address):
            return None
        host, kind = address.compressed, "ipv6"
    elif value.count(":") > 1:
        address = _ip(value)
        if not isinstance(address, ipaddress.IPv6Address):
            return None
        host, kind = address.compressed, "ipv6"
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
        address = _ip(host)
        if isinstance(address, ipaddress.IPv4Address):
            kind = "ipv4"
        elif is_hostname(host):
            host, kind = host.lower(), "name"
        else:
            return None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            return None
        port = int(port_text)
    return host, port, kind


def normalize_target(value: Any) -> str | None:
    """``host:port`` (``[v6]:port``) with the default port added; ``None`` when invalid."""
    if not isinstance(value, str):
        return None
    parsed = split_host_port(value.strip())
    if parsed is None:
        return None
    host, port, kind = parsed
    shown = f"[{host}]" if kind == "ipv6" else host
    return f"{shown}:{DEFAULT_TARGET_PORT if port is None else port}"


def check_upstream_name(value: Any, values: dict[str, Any]) -> str | None:
    """Kong 1.x's upstream name rule: a hostname, no IP address, no port."""
    parsed = split_host_port(value)
    if parsed is None:
        return "Invalid name; must be a valid hostname"
    if parsed[2] != "name":
        return "Invalid name; no ip addresses allowed"
    if parsed[1] is not None:
        return "Invalid name; no port allowed"
    if value.endswith("."):
        return "Invalid name; must be a valid hostname"
    return None


def check_target(value: Any, values: dict[str, Any]) -> str | None:
    """``host[:port]``, stored normalised (port added, IPv6 bracketed, names lower-cased)."""
    normal = normalize_target(value)
    if normal is None:
        return "Invalid target; not a valid hostname or ip address"
    values["target"] = normal
    return None


def _integer_between(low: int, high: int) -> FieldFunc:
    """A check for a ``number`` field holding an integer in ``low..high`` (Kong 1.x wording)."""

    def check(value: Any, values: dict[str, Any]) -> str | None:
        if not isinstance(value, int):
            return "expected an integer"
        if not low <= value <= high:
            return f"value should be between {low} and {high}"
        return None

    return check


def _number_between(low: int, high: int) -> FieldFunc:
    def check(value: Any, values: dict[str, Any]) -> str | None:
        if not low <= value <= high:
            return f"value should be between {low} and {high}"
        return None

    return check


def _check_statuses(value: Any, values: dict[str, Any]) -> str | list[str] | None:
    """A list of HTTP statuses 100..999; form values ("200,302") become integers in place."""
    problems: list[str] = []
    statuses: list[int] = []
    for item in value:
        number = _number(item)
        if not isinstance(number, int):
            problems.append(f"expected an integer: {item}")
        elif not 100 <= number <= 999:
            problems.append(f"value should be between 100 and 999: {number}")
        else:
            statuses.append(number)
    if problems:
        return problems
    values["http_statuses"] = statuses
    return None


def _statuses(default: list[int]) -> Field:
    return Field(type="array", default=default, func=_check_statuses)


def _count() -> Field:
    return Field(type="number", default=0, func=_integer_between(0, 255))


def _seconds(default: int) -> Field:
    return Field(type="number", default=default, func=_number_between(0, 65535))


_PROBE_TYPES = ("tcp", "http", "https")

_ACTIVE = Schema(
    fields={
        "type": Field(type="string", default="http", enum=_PROBE_TYPES),
        "timeout": _seconds(1),
        "concurrency": Field(type="number", default=10, func=_integer_between(1, _INT_MAX)),
        "http_path": Field(
            type="string",
            default="/",
            func=lambda v, _: None if v.startswith("/") else "should start with: /",
        ),
        "healthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "interval": _seconds(0),
                    "http_statuses": _statuses([200, 302]),
                    "successes": _count(),
                }
            ),
        ),
        "unhealthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "interval": _seconds(0),
                    "http_statuses": _statuses([429, 404, 500, 501, 502, 503, 504, 505]),
                    "tcp_failures": _count(),
                    "timeouts": _count(),
                    "http_failures": _count(),
                }
            ),
        ),
    }
)

_PASSIVE = Schema(
    fields={
        "type": Field(type="string", default="http", enum=_PROBE_TYPES),
        "healthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "http_statuses": _statuses(
                        [200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
                        + [300, 301, 302, 303, 304, 305, 306, 307, 308]
                    ),
                    "successes": _count(),
                }
            ),
        ),
        "unhealthy": Field(
            type="table",
            schema=Schema(
                fields={
                    "http_statuses": _statuses([429, 500, 503]),
                    "tcp_failures": _count(),
                    "timeouts": _count(),
                    "http_failures": _count(),
                }
            ),
        ),
    }
)

#: ``healthchecks``: every field optional, deep-merged over these defaults on write.
HEALTHCHECKS = Schema(
    fields={
        "active": Field(type="table", schema=_ACTIVE),
        "passive": Field(type="table", schema=_PASSIVE),
    }
)


def _header_name(field: str) -> FieldFunc:
    """Kong's header-name rule; a blank value clears the field (``hash_on_header=`` in a form)."""

    def check(value: Any, values: dict[str, Any]) -> str | None:
        if _blank_to_none(field, value, values):
            return None
        if not _HEADER_NAME_RE.match(value):
            return f"bad header name '{value}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        return None

    return check


def _default_algorithm(values: Mapping[str, Any]) -> str:
    """round-robin, unless a hash was asked for (then consistent-hashing)."""
    return "round-robin" if values.get("hash_on") in (None, "none") else "consistent-hashing"


def _check_upstream(values: dict[str, Any], ctx: CheckContext) -> Errors | None:
    """Kong's hash rules (its 0.12 messages): headers named, fallback a different hash."""
    hash_on, fallback = values.get("hash_on"), values.get("hash_fallback")
    errors: Errors = {}
    if hash_on == "header" and not values.get("hash_on_header"):
        errors["hash_on_header"] = "hash_on_header is required when hash_on is 'header'"
    if fallback == "header" and not values.get("hash_fallback_header"):
        errors["hash_fallback_header"] = (
            "hash_fallback_header is required when hash_fallback is 'header'"
        )
    if errors:
        return errors
    if hash_on == "none":
        if fallback != "none":
            return {"hash_fallback": "Cannot set fallback if primary 'hash_on' is not set"}
    elif hash_on == fallback and (
        hash_on != "header"
        or str(values["hash_on_header"]).lower() == str(values["hash_fallback_header"]).lower()
    ):
        return {"hash_fallback": "Cannot set fallback and primary hashes to the same value"}
    return None


UPSTREAMS = EntitySchema(
    name="upstreams",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "name": Field(type="string", required=True, unique=True, func=check_upstream_name),
        "hash_on": Field(type="string", default="none", enum=HASH_ON),
        "hash_fallback": Field(type="string", default="none", enum=HASH_ON),
        "hash_on_header": Field(type="string", func=_header_name("hash_on_header")),
        "hash_fallback_header": Field(type="string", func=_header_name("hash_fallback_header")),
        "algorithm": Field(type="string", default=_default_algorithm, enum=ALGORITHMS),
        "slots": Field(type="number", default=10000, func=_integer_between(10, 65536)),
        "healthchecks": Field(type="table", schema=HEALTHCHECKS),
        "tags": tags_field(),
    },
    self_check=_check_upstream,
)


def _target_exists(row: Mapping[str, Any]) -> Exception:
    return ConflictError("target", row.get("target"))


TARGETS = EntitySchema(
    name="targets",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "upstream_id": Field(type="id", required=True, foreign="upstreams:id"),
        "target": Field(type="string", required=True, func=check_target),
        "weight": Field(type="number", default=100, func=_integer_between(0, 1000)),
        "tags": tags_field(),
    },
    unique_together=(
        UniqueTogether(
            ("upstream_id", "target"),
            lambda: ConflictError("target", None),
            error_for_row=_target_exists,
        ),
    ),
)


# --------------------------------------------------------------------------- plugins (§2.3)

#: name -> the plugin's config schema (its ``no_consumer`` set), or None when not loaded
PluginSchemaLookup = Callable[[str], Schema | None]


def plugins_schema(
    lookup: PluginSchemaLookup, exists_error: Callable[[], Exception]
) -> EntitySchema:
    """The ``plugins`` collection, whose ``config`` sub-schema depends on the plugin ``name``.

    ``lookup`` comes from the plugin registry (the store layer knows nothing above
    it); ``exists_error`` builds the 409 raised for a duplicate (name, api_id,
    consumer_id) on insert.
    """

    def config_schema(values: Mapping[str, Any]) -> Schema | str | None:
        name = values.get("name")
        if not isinstance(name, str) or not name:
            return None
        found = lookup(name)
        if found is None:
            return f'Plugin "{name}" not found'
        return found

    def self_check(values: dict[str, Any], ctx: CheckContext) -> str | None:
        found = lookup(values["name"]) if values.get("name") else None
        if values.get("consumer_id") is not None and found is not None and found.no_consumer:
            return "No consumer can be configured for that plugin"
        return None

    return EntitySchema(
        name="plugins",
        put_key=("id", "name"),
        fields={
            "id": id_field(),
            "created_at": created_at_field(),
            "name": Field(type="string", required=True, immutable=True),
            "api_id": Field(type="id", foreign="apis:id"),
            "consumer_id": Field(type="id", foreign="consumers:id"),
            "config": Field(type="table", default={}, schema=config_schema),
            "enabled": Field(type="boolean", default=True),
            "tags": tags_field(),
        },
        self_check=self_check,
        unique_together=(
            UniqueTogether(("name", "api_id", "consumer_id"), exists_error, on_update=False),
        ),
    )


def core_schemas(
    lookup: PluginSchemaLookup, exists_error: Callable[[], Exception]
) -> dict[str, EntitySchema]:
    """apis, consumers, plugins, nodes, upstreams and targets, keyed by collection name."""
    return {
        "apis": APIS,
        "consumers": CONSUMERS,
        "plugins": plugins_schema(lookup, exists_error),
        "nodes": NODES,
        "upstreams": UPSTREAMS,
        "targets": TARGETS,
    }
