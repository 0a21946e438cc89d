# -*- test-case-name: tests.unit.test_schemas -*-
"""What a schema is: fields, schemas, entity schemas and their rules (SPEC §2 legend).

Declarations only; :mod:`.engine` enforces them.  The ``tags`` field lives here
because :class:`EntitySchema` adds it to every entity whose table keeps tags.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kongtx.store.rules import TAGS_COLUMN
from kongtx.store.tables import TAGGED

FieldType = Literal["id", "timestamp", "string", "boolean", "number", "array", "table", "url"]
Mode = Literal["insert", "patch", "full"]
Errors = dict[str, str | list[str]]

#: A custom check: gets the coerced value and the whole (mutable) values dict; returns
#: ``None`` when fine, else a message (or several).  It may normalise ``values`` in place.
FieldFunc = Callable[[Any, dict[str, Any]], str | list[str] | None]
#: An entity/config check run once every field is valid: ``None``, a message or a field map.
SelfCheck = Callable[[dict[str, Any], "CheckContext"], str | Errors | None]


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
