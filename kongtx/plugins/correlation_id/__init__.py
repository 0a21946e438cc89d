"""The correlation-id plugin: tags each request with a correlation id (SPEC §4.5)."""

from kongtx.plugins.correlation_id.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="correlation-id", priority=0, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
