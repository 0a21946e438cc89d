"""The ssl plugin: serves a per-API certificate for SNI and can require HTTPS (SPEC §4.4)."""

from kongtx.plugins.spec import PluginSpec
from kongtx.plugins.ssl.schema import SCHEMA

SPEC = PluginSpec(name="ssl", priority=3000, config_schema=SCHEMA, no_consumer=True)

__all__ = ["SPEC"]
