# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""datadog plugin config (SPEC §4.6): statsd's fields plus per-metric ``key:value`` tags."""

from __future__ import annotations

from typing import Any

from kongtx.plugins.statsd.schema import METRICS
from kongtx.store.schemas import Field, Schema


def check_tags(value: Any, values: dict[str, Any]) -> str | None:
    """Each tag is ``key:value`` with a non-empty value."""
    for entry in value:
        key, colon, tag_value = str(entry).partition(":")
        if not colon or not tag_value.strip():
            return f"key '{entry}' has no value"
    return None


SCHEMA = Schema(
    fields={
        "host": Field(type="string", default="localhost"),
        "port": Field(type="number", default=8125),
        "metrics": Field(type="array", default=list(METRICS), enum=METRICS),
        "tags": Field(
            type="table",
            schema=Schema(fields={m: Field(type="array", func=check_tags) for m in METRICS}),
        ),
        "timeout": Field(type="number", default=10000),
    },
)
