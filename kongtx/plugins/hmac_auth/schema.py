# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""hmac-auth plugin config and the ``hmacauth_credentials`` collection (SPEC §2.5, §4.2)."""

from __future__ import annotations

from typing import Any

from kongtx.plugins.auth_common import anonymous_field
from kongtx.store.schemas import (
    EntitySchema,
    Field,
    Schema,
    credential_fields,
)


def check_clock_skew(value: Any, values: dict[str, Any]) -> str | None:
    """A negative skew would reject every request."""
    if value < 0:
        return "Clock Skew should be positive"
    return None


SCHEMA = Schema(
    no_consumer=True,
    fields={
        # Kong 0.10: a consumer id to fall back to instead of rejecting
        "anonymous": anonymous_field(),
        "hide_credentials": Field(type="boolean", default=False),
        "clock_skew": Field(type="number", default=300, func=check_clock_skew),
    },
)

CREDENTIALS = EntitySchema(
    name="hmacauth_credentials",
    fields=credential_fields(
        {
            "username": Field(type="string", required=True, unique=True),
            # not generated in 0.9: an unset secret simply never verifies
            "secret": Field(type="string"),
        },
    ),
)
