"""The file-log plugin: appends each request's log to a file (SPEC §4.6)."""

from kongtx.plugins.file_log.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="file-log", priority=1, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
