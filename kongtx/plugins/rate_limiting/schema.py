# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""rate-limiting plugin config (SPEC §4.4) and its counters table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.store.schemas import CheckContext, EntitySchema, Field, Schema

#: the periods, shortest first (the order of the "cannot be lower" checks)
PERIODS = ("second", "minute", "hour", "day", "month", "year")


def check_periods(limits: Mapping[str, Any]) -> str | None:
    """Kong's period checks: one limit at least, all > 0, longer periods never lower.

    Like Kong, the last offending pair found is the one reported.
    """
    has_value = False
    invalid_value: str | None = None
    invalid_order: str | None = None
    for i, period in enumerate(PERIODS):
        limit = limits.get(period)
        if limit is None:
            continue
        has_value = True
        if limit <= 0:
            invalid_value = f"Value for {period} must be greater than zero"
            continue
        for longer in PERIODS[i:]:
            other = limits.get(longer)
            if other is not None and other < limit:
                invalid_order = (
                    f"The limit for {longer} cannot be lower than the limit for {period}"
                )
    if not has_value:
        return "You need to set at least one limit: " + ", ".join(PERIODS)
    return invalid_value or invalid_order


def check_redis(values: Mapping[str, Any]) -> str | None:
    """The redis policy needs somewhere to go."""
    if values.get("policy") == "redis" and not values.get("redis_host"):
        return "You need to specify a Redis host"
    return None


def policy_fields() -> dict[str, Field]:
    """Fields shared with response-ratelimiting: who is counted and where counters live."""
    return {
        "limit_by": Field(type="string", default="consumer", enum=("consumer", "credential", "ip")),
        "policy": Field(type="string", default="cluster", enum=("local", "cluster", "redis")),
        "fault_tolerant": Field(type="boolean", default=True),
        "redis_host": Field(type="string"),
        "redis_port": Field(type="number", default=6379),
        "redis_password": Field(type="string"),
        "redis_timeout": Field(type="number", default=2000),
    }


def _check(values: dict[str, Any], ctx: CheckContext) -> str | None:
    return check_periods(values) or check_redis(values)


SCHEMA = Schema(
    fields={
        **{p: Field(type="number") for p in PERIODS},
        **policy_fields(),
    },
    self_check=_check,
)


def metrics_schema(name: str) -> EntitySchema:
    """A counters table (cluster policy): one row per (api, identifier, period start, period)."""
    return EntitySchema(
        name=name,
        primary_key=("api_id", "identifier", "period_date", "period"),
        fields={
            "api_id": Field(type="id", required=True, primary_key=True),
            "identifier": Field(type="string", required=True, primary_key=True),
            "period_date": Field(type="timestamp", required=True, primary_key=True),
            "period": Field(type="string", required=True, primary_key=True),
            "value": Field(type="number", default=0),
        },
    )


METRICS = metrics_schema("ratelimiting_metrics")
