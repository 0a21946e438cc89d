"""The response-transformer plugin: rewrites the response sent to the client (SPEC §4.5)."""

from kongtx.plugins.response_transformer.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(
    name="response-transformer", priority=800, config_schema=SCHEMA, no_consumer=False
)

__all__ = ["SPEC"]
