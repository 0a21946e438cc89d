# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""bot-detection plugin config (SPEC §4.4): white/black lists of User-Agent regexes."""

from __future__ import annotations

import re
from typing import Any

from kongtx.store.schemas import Field, Schema


def check_regexes(value: Any, values: dict[str, Any]) -> str | None:
    """Every entry must compile, so a typo fails at the Admin API, not on every request."""
    for entry in value:
        try:
            re.compile(entry)
        except (re.error, TypeError):
            return f"value '{entry}' is not a valid regex"
    return None


SCHEMA = Schema(
    no_consumer=True,
    fields={
        "whitelist": Field(type="array", default=[], func=check_regexes),
        "blacklist": Field(type="array", default=[], func=check_regexes),
    },
)
