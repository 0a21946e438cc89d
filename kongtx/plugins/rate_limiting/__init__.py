"""The rate-limiting plugin: fixed-window request quotas (SPEC §4.4)."""

from kongtx.plugins.rate_limiting.schema import METRICS, SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(
    name="rate-limiting",
    priority=900,
    config_schema=SCHEMA,
    entities={METRICS.name: METRICS},
)

__all__ = ["SPEC"]
