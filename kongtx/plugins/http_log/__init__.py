"""The http-log plugin: posts each request's log to an HTTP endpoint (SPEC §4.6)."""

from kongtx.plugins.http_log.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="http-log", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
