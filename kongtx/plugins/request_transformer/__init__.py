"""The request-transformer plugin: rewrites the request sent upstream (SPEC §4.5)."""

from kongtx.plugins.request_transformer.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="request-transformer", priority=800, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
