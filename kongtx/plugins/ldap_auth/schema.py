# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""ldap-auth plugin config (SPEC §4.2); may be configured per consumer."""

from __future__ import annotations

from kongtx.plugins.auth_common import anonymous_field
from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        # Kong 0.10: a consumer id to fall back to instead of rejecting
        "anonymous": anonymous_field(),
        "ldap_host": Field(type="string", required=True),
        "ldap_port": Field(type="number", required=True),
        "start_tls": Field(type="boolean", required=True, default=False),
        "verify_ldap_host": Field(type="boolean", required=True, default=False),
        "base_dn": Field(type="string", required=True),
        "attribute": Field(type="string", required=True),
        # kept for Kong compatibility; Kong 0.9 ignores it (its cache never expires)
        "cache_ttl": Field(type="number", required=True, default=60),
        "hide_credentials": Field(type="boolean", default=False),
        "timeout": Field(type="number", default=10000),
        "keepalive": Field(type="number", default=60000),
    },
)
