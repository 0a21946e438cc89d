"""The galileo plugin: ships ALF records to Mashape Galileo (SPEC §4.6)."""

from kongtx.plugins.galileo.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="galileo", priority=0, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
