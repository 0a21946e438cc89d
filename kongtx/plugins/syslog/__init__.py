"""The syslog plugin: sends each request's log to the local syslog (SPEC §4.6)."""

from kongtx.plugins.spec import PluginSpec
from kongtx.plugins.syslog.schema import SCHEMA

SPEC = PluginSpec(name="syslog", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
