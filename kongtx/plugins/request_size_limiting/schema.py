# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""request-size-limiting plugin config (SPEC §4.4): the limit in megabytes (2^20 bytes)."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

SCHEMA = Schema(fields={"allowed_payload_size": Field(type="number", default=128)})
