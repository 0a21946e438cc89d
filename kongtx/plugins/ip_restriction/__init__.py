"""The ip-restriction plugin: allows or denies client IPs and CIDRs (SPEC §4.4)."""

from kongtx.plugins.ip_restriction.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="ip-restriction", priority=990, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
