"""The bot-detection plugin: blocks known bots by User-Agent (SPEC §4.4)."""

from kongtx.plugins.bot_detection.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="bot-detection", priority=2500, config_schema=SCHEMA, no_consumer=True)

__all__ = ["SPEC"]
