# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""response-transformer plugin config (SPEC §4.5): rules on headers and top-level JSON keys."""

from __future__ import annotations

from kongtx.plugins.request_transformer.schema import transformer_schema

SCHEMA = transformer_schema(("headers", "json"))
