"""The response-ratelimiting plugin: quotas the upstream reports per response (SPEC §4.4)."""

from kongtx.plugins.response_ratelimiting.schema import METRICS, SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(
    name="response-ratelimiting",
    priority=900,
    config_schema=SCHEMA,
    entities={METRICS.name: METRICS},
)

__all__ = ["SPEC"]
