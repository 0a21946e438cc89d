# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""key-auth plugin config and the ``keyauth_credentials`` collection (SPEC §2.5, §4.2)."""

from __future__ import annotations

from kongtx.plugins.auth_common import anonymous_field
from kongtx.store.schemas import (
    EntitySchema,
    Field,
    Schema,
    credential_fields,
    random_hex,
)

SCHEMA = Schema(
    no_consumer=True,
    fields={
        # Kong 0.10: a consumer id to fall back to instead of rejecting
        "anonymous": anonymous_field(),
        "key_names": Field(type="array", required=True, default=["apikey"]),
        "hide_credentials": Field(type="boolean", default=False),
    },
)

CREDENTIALS = EntitySchema(
    name="keyauth_credentials",
    fields=credential_fields(
        {
            # a missing or blank key is replaced by 32 random hex characters
            "key": Field(type="string", unique=True, generate=random_hex),
        },
    ),
)
