# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""galileo plugin config (SPEC §4.6)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    fields={
        "service_token": Field(type="string", required=True),
        "environment": Field(type="string"),
        "log_bodies": Field(type="boolean", default=False),
        "retry_count": Field(type="number", default=10),
        "connection_timeout": Field(type="number", default=30),
        "flush_timeout": Field(type="number", default=2),
        "queue_size": Field(type="number", default=1000),
        "host": Field(type="string", default="collector.galileo.mashape.com"),
        "port": Field(type="number", default=443),
        "https": Field(type="boolean", default=True),
        "https_verify": Field(type="boolean", default=False),
    },
)
