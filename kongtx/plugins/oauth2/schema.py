# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""oauth2 plugin config and its three collections (SPEC §2.5, §4.2, §4.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kongtx.store.schemas import (
    CheckContext,
    EntitySchema,
    Field,
    Schema,
    consumer_fk,
    created_at_field,
    id_field,
    parse_url,
    random_hex,
)

#: authorization codes live five minutes (SPEC §4.3)
CODE_TTL = 300
#: tokens with an expiration are kept 14 days (SPEC §2.5)
TOKEN_TTL = 1_209_600

_FLOWS = (
    "enable_authorization_code",
    "enable_implicit_grant",
    "enable_client_credentials",
    "enable_password_grant",
)


def check_mandatory_scope(value: Any, values: dict[str, Any]) -> str | None:
    """A mandatory scope is only meaningful with scopes to choose from."""
    if value is True and not values.get("scopes"):
        return "To set a mandatory scope you also need to create available scopes"
    return None


def _check_flows(values: dict[str, Any], ctx: CheckContext) -> str | None:
    if not any(values.get(flow) for flow in _FLOWS):
        return "You need to enable at least one OAuth flow"
    return None


SCHEMA = Schema(
    no_consumer=True,
    fields={
        "scopes": Field(type="array"),
        "mandatory_scope": Field(
            type="boolean", required=True, default=False, func=check_mandatory_scope
        ),
        "provision_key": Field(type="string", unique=True, generate=random_hex),
        "token_expiration": Field(type="number", required=True, default=7200),
        **{flow: Field(type="boolean", required=True, default=False) for flow in _FLOWS},
        "hide_credentials": Field(type="boolean", default=False),
        "accept_http_if_already_terminated": Field(type="boolean", default=False),
    },
    self_check=_check_flows,
)


def check_redirect_uris(value: Any, values: dict[str, Any]) -> str | None:
    """Each redirect URI must be absolute and fragment-free; at least one is needed."""
    if not value:
        return "at least one URI is required"
    for uri in value:
        if not isinstance(uri, str) or parse_url(uri) is None:
            return f"cannot parse '{uri}'"
        if urlsplit(uri).fragment or "#" in uri:
            return f"fragment not allowed in '{uri}'"
    return None


CREDENTIALS = EntitySchema(
    name="oauth2_credentials",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "consumer_id": consumer_fk(),
        "name": Field(type="string", required=True),
        "client_id": Field(type="string", unique=True, generate=random_hex),
        "client_secret": Field(type="string", unique=True, generate=random_hex),
        "redirect_uri": Field(type="array", required=True, func=check_redirect_uris),
    },
)

AUTHORIZATION_CODES = EntitySchema(
    name="oauth2_authorization_codes",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "credential_id": Field(type="id", required=True, foreign="oauth2_credentials:id"),
        "code": Field(type="string", unique=True, immutable=True, generate=random_hex),
        "authenticated_userid": Field(type="string"),
        "scope": Field(type="string"),
    },
    ttl=lambda row: CODE_TTL,
)


def _refresh_token(values: Mapping[str, Any]) -> str | None:
    """Only expiring tokens get a refresh token."""
    expires_in = values.get("expires_in")
    if isinstance(expires_in, int | float) and expires_in > 0:
        return random_hex()
    return None


def _token_ttl(row: Mapping[str, Any]) -> int | None:
    expires_in = row.get("expires_in")
    if isinstance(expires_in, int | float) and expires_in > 0:
        return TOKEN_TTL
    return None


TOKENS = EntitySchema(
    name="oauth2_tokens",
    fields={
        "id": id_field(),
        "created_at": created_at_field(),
        "credential_id": Field(type="id", required=True, foreign="oauth2_credentials:id"),
        "token_type": Field(type="string", required=True, default="bearer", enum=("bearer",)),
        "expires_in": Field(type="number", required=True),
        "access_token": Field(type="string", unique=True, generate=random_hex),
        "refresh_token": Field(type="string", unique=True, default=_refresh_token),
        "authenticated_userid": Field(type="string"),
        "scope": Field(type="string"),
    },
    ttl=_token_ttl,
)
