# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""response-transformer plugin config (SPEC §4.5): rules on headers and top-level JSON keys."""

from __future__ import annotations

from kongtx.plugins.request_transformer.schema import rule_table
from kongtx.store.schemas import Schema

_PARTS = ("headers", "json")

SCHEMA = Schema(
    fields={
        "remove": rule_table(_PARTS, with_values=False),
        "replace": rule_table(_PARTS, with_values=True),
        "add": rule_table(_PARTS, with_values=True),
        "append": rule_table(_PARTS, with_values=True),
    },
)
