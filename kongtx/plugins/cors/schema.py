# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""cors plugin config (SPEC §4.4); an unset ``origin`` means ``*`` at request time."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(
    no_consumer=True,
    fields={
        "origin": Field(type="string"),
        "headers": Field(type="array"),
        "exposed_headers": Field(type="array"),
        "methods": Field(type="array", enum=("HEAD", "GET", "POST", "PUT", "PATCH", "DELETE")),
        "max_age": Field(type="number"),
        "credentials": Field(type="boolean", default=False),
        "preflight_continue": Field(type="boolean", default=False),
    },
)
