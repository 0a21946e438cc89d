"""The statsd plugin: sends request metrics to StatsD (SPEC §4.6)."""

from kongtx.plugins.spec import PluginSpec
from kongtx.plugins.statsd.schema import SCHEMA

SPEC = PluginSpec(name="statsd", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
