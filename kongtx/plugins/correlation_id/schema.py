# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""correlation-id plugin config (SPEC §4.5)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "header_name": Field(type="string", default="Kong-Request-ID"),
        "generator": Field(
            type="string", default="uuid#counter", enum=("uuid", "uuid#counter", "tracker")
        ),
        "echo_downstream": Field(type="boolean", default=False),
    },
)
