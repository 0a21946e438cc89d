"""The ldap-auth plugin: authenticates against an LDAP server (SPEC §4.2)."""

from kongtx.plugins.ldap_auth.schema import SCHEMA
from kongtx.plugins.spec import PluginSpec

SPEC = PluginSpec(name="ldap-auth", priority=1000, config_schema=SCHEMA, no_consumer=False)

__all__ = ["SPEC"]
