# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""basic-auth plugin config and the ``basicauth_credentials`` collection (SPEC §2.5, §4.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.auth_common import anonymous_field
from kongtx.plugins.basic_auth.crypto import hash_password, verify_basicauth_password
from kongtx.store.schemas import (
    EntitySchema,
    Field,
    RunInThread,
    Schema,
    credential_fields,
)

SCHEMA = Schema(
    no_consumer=True,
    fields={
        # Kong 0.10: a consumer id to fall back to instead of rejecting
        "anonymous": anonymous_field(),
        "hide_credentials": Field(type="boolean", default=False),
    },
)


async def hash_before_write(
    row: dict[str, Any], old: Mapping[str, Any] | None, run_in_thread: RunInThread
) -> None:
    """Store a slow salted hash of a new password, off the reactor thread.

    A value equal to the stored one (a PUT or PATCH echoing the row back) is kept
    as-is, so legacy SHA-1 values and existing hashes are never hashed twice.
    """
    password = row.get("password")
    if password is None:
        return
    if old is not None and password == old.get("password"):
        return
    row["password"] = await run_in_thread(lambda: hash_password(password))


CREDENTIALS = EntitySchema(
    name="basicauth_credentials",
    fields=credential_fields(
        {
            "username": Field(type="string", required=True, unique=True),
            "password": Field(type="string"),
        },
    ),
    before_write=hash_before_write,
)

__all__ = ["CREDENTIALS", "SCHEMA", "hash_before_write", "verify_basicauth_password"]
