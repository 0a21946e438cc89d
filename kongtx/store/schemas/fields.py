# -*- test-case-name: tests.unit.test_schemas -*-
"""Pieces every entity schema shares: ids, creation times, credentials' owners, blanks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from kongtx.store.schemas.model import Field

UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


def is_uuid(value: Any) -> bool:
    """Whether ``value`` is a uuid string (SPEC §1.4's regex, case-insensitive)."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


def random_hex() -> str:
    """32 random hex characters (a uuid4 without dashes), Kong's ``utils.random_string``."""
    return uuid.uuid4().hex


def id_field() -> Field:
    """The generated uuid primary key."""
    return Field(type="id", dao_insert_value=True, primary_key=True)


def created_at_field() -> Field:
    """The generated epoch-ms creation time: required on PUT, never changed (SPEC §1.4)."""
    return Field(type="timestamp", dao_insert_value=True, immutable=True, required=True)


def credential_fields(
    fields: Mapping[str, Field], owner: str = "consumer_id", foreign: str = "consumers:id"
) -> dict[str, Field]:
    """A credential's fields: the generated id and creation time, the required ``owner``
    column naming what it belongs to (``foreign``: a consumer; for oauth2's codes and
    tokens, an oauth2 credential), then ``fields``."""
    return {
        "id": id_field(),
        "created_at": created_at_field(),
        owner: Field(type="id", required=True, foreign=foreign),
        **fields,
    }


def blank_to_none(name: str, value: Any, values: dict[str, Any]) -> bool:
    """Treat a blank value as unset (hosts, paths, header names), so two rows never collide on ''."""
    if value == "":
        values[name] = None
        return True
    return False
