# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""jwt plugin config and the ``jwt_secrets`` collection (SPEC §2.5, §4.2)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from kongtx.plugins.auth_common import anonymous_field
from kongtx.store.schemas import (
    CheckContext,
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
        "uri_param_names": Field(type="array", default=["jwt"]),
        "key_claim_name": Field(type="string", default="iss"),
        "secret_is_base64": Field(type="boolean", required=True, default=False),
        "claims_to_verify": Field(type="array", enum=("exp", "nbf")),
    },
)


def _check_secret(values: dict[str, Any], ctx: CheckContext) -> str | None:
    """RS256 needs a public key that parses, so a typo fails here, not on every request."""
    if values.get("algorithm") != "RS256":
        return None
    pem = values.get("rsa_public_key")
    if not pem:
        return "no mandatory 'rsa_public_key'"
    try:
        serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnicodeError):
        return "'rsa_public_key' format is invalid"
    return None


CREDENTIALS = EntitySchema(
    name="jwt_secrets",
    fields=credential_fields(
        {
            "key": Field(type="string", unique=True, generate=random_hex),
            "secret": Field(type="string", unique=True, generate=random_hex),
            "rsa_public_key": Field(type="string"),
            "algorithm": Field(type="string", default="HS256", enum=("HS256", "RS256")),
        },
    ),
    self_check=_check_secret,
)
