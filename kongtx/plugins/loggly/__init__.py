"""The loggly plugin: sends each request's log to Loggly over UDP (SPEC §4.6)."""

from kongtx.plugins.loggly.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="loggly", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
