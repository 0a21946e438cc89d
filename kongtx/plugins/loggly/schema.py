# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""loggly plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.plugins.syslog.schema import SEVERITY_FIELDS, severity_field
from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "host": Field(type="string", default="logs-01.loggly.com"),
        "port": Field(type="number", default=514),
        "key": Field(type="string", required=True),
        "tags": Field(type="array", default=["kong"]),
        **{name: severity_field() for name in SEVERITY_FIELDS},
        "timeout": Field(type="number", default=10000),
    },
)
