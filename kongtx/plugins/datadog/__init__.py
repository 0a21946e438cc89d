"""The datadog plugin: sends request metrics to DogStatsD with tags (SPEC §4.6)."""

from kongtx.plugins.datadog.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="datadog", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
