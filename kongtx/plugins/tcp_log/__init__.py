"""The tcp-log plugin: sends each request's log over TCP (SPEC §4.6)."""

from kongtx.plugins.spec import PluginSpec
from kongtx.plugins.tcp_log.schema import SCHEMA

SPEC = PluginSpec(name="tcp-log", priority=0, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
