"""The cors plugin: answers CORS preflights and decorates responses (SPEC §4.4)."""

from kongtx.plugins.cors.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="cors", priority=2000, config_schema=SCHEMA, no_consumer=True)

__all__ = ["SPEC"]
