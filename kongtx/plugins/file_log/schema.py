# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""file-log plugin config (SPEC §4.6): the file must be creatable when configured."""

from __future__ import annotations

from typing import Any

from kongtx.store.schemas import Field, Schema


def check_path(value: Any, values: dict[str, Any]) -> str | None:
    """``touch`` the file, as Kong does, so a bad path fails at the Admin API.

    Opening a local file for append is a single short syscall pair; it is done
    inline rather than through a thread because validation is synchronous.
    """
    try:
        with open(value, "a"):
            pass
    except (OSError, ValueError):
        return "Cannot create file. Make sure the path is valid, and has the right permissions"
    return None


SCHEMA = Schema(fields={"path": Field(type="string", required=True, func=check_path)})
