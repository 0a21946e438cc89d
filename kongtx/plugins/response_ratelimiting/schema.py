# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""response-ratelimiting plugin config (SPEC §4.4): named limits counted by the upstream."""

from __future__ import annotations

from typing import Any

from kongtx.plugins.rate_limiting.schema import (
    PERIODS,
    check_periods,
    check_redis,
    metrics_schema,
    policy_fields,
)
from kongtx.store.schemas import CheckContext, Field, Schema


def _check(values: dict[str, Any], ctx: CheckContext) -> str | None:
    limits = values.get("limits") or {}
    if not limits:
        return "You need to set at least one limit name"
    for name in sorted(limits):
        problem = check_periods(limits[name] or {})
        if problem:
            return problem
    return check_redis(values)


SCHEMA = Schema(
    fields={
        "header_name": Field(type="string", default="x-kong-limit"),
        **policy_fields(),
        "block_on_first_violation": Field(type="boolean", default=False),
        "limits": Field(
            type="table",
            schema=Schema(flexible=True, fields={p: Field(type="number") for p in PERIODS}),
        ),
    },
    self_check=_check,
)

METRICS = metrics_schema("response_ratelimiting_metrics")
