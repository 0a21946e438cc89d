"""The request-size-limiting plugin: rejects bodies above a size (SPEC §4.4)."""

from kongtx.plugins.request_size_limiting.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(
    name="request-size-limiting", priority=950, config_schema=SCHEMA, no_consumer=False
)

__all__ = ["SPEC"]
