"""The acl plugin: allow or deny consumers by group (SPEC §4.4)."""

from kongtx.plugins.acl.schema import ACLS, SCHEMA
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="acl",
    priority=950,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={ACLS.name: ACLS},
    routes=(CredentialRoute("acls", "acls", "group"),),
)

__all__ = ["SPEC"]
