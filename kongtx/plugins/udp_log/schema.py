# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""udp-log plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "host": Field(type="string", required=True),
        "port": Field(type="number", required=True),
        "timeout": Field(type="number", default=10000),
    },
)
