"""The runscope plugin: posts each request to a Runscope bucket (SPEC §4.6)."""

from kongtx.plugins.runscope.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="runscope", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
