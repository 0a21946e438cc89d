# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""http-log plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "http_endpoint": Field(type="url", required=True),
        "method": Field(type="string", default="POST", enum=("POST", "PUT", "PATCH")),
        "timeout": Field(type="number", default=10000),
        "keepalive": Field(type="number", default=60000),
    },
)
