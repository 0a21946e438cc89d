# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""statsd plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

#: every metric the statsd and datadog plugins know, in Kong's order
METRICS = (
    "request_count",
    "latency",
    "request_size",
    "status_count",
    "response_size",
    "unique_users",
    "request_per_user",
    "upstream_latency",
)

SCHEMA = Schema(
    fields={
        "host": Field(type="string", default="localhost"),
        "port": Field(type="number", default=8125),
        "metrics": Field(type="array", default=list(METRICS), enum=METRICS),
        "timeout": Field(type="number", default=10000),
    },
)
