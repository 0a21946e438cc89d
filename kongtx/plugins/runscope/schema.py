# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""runscope plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "access_token": Field(type="string", default=""),
        "bucket_key": Field(type="string", required=True),
        "log_body": Field(type="boolean", default=False),
        "api_endpoint": Field(type="url", required=True, default="https://api.runscope.com"),
        "timeout": Field(type="number", default=10000),
        "keepalive": Field(type="number", default=30),
    },
)
