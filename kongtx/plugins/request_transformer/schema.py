# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""request-transformer plugin config (SPEC §4.5): remove / replace / add / append rules."""

from __future__ import annotations

from typing import Any

from kongtx.store.schemas import Field, Schema


def check_for_value(value: Any, values: dict[str, Any]) -> str | None:
    """``name:value`` entries (the value may hold more colons) need their colon."""
    for entry in value:
        if not isinstance(entry, str) or ":" not in entry:
            return f"key '{entry}' has no value"
    return None


def rule_table(parts: tuple[str, ...], with_values: bool) -> Field:
    """One rule kind (``remove``...) holding an array per part, each defaulting to []."""
    func = check_for_value if with_values else None
    return Field(
        type="table",
        schema=Schema(fields={p: Field(type="array", default=[], func=func) for p in parts}),
    )


def transformer_schema(parts: tuple[str, ...]) -> Schema:
    """The rules of a transformer (request- and response-transformer) acting on ``parts``:
    ``remove`` (names), ``replace``, ``add`` and ``append`` (``name:value`` entries)."""
    return Schema(
        fields={
            "remove": rule_table(parts, with_values=False),
            "replace": rule_table(parts, with_values=True),
            "add": rule_table(parts, with_values=True),
            "append": rule_table(parts, with_values=True),
        },
    )


SCHEMA = transformer_schema(("body", "headers", "querystring"))
