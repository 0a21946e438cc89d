"""The udp-log plugin: sends each request's log as a UDP datagram (SPEC §4.6)."""

from kongtx.plugins.spec import PluginSpec
from kongtx.plugins.udp_log.schema import SCHEMA

SPEC = PluginSpec(name="udp-log", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
