"""The basic-auth plugin: authenticate consumers by username and password (SPEC §4.2)."""

from kongtx.plugins.basic_auth.schema import CREDENTIALS, SCHEMA
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="basic-auth",
    priority=1000,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={CREDENTIALS.name: CREDENTIALS},
    routes=(CredentialRoute("basic-auth", "basicauth_credentials", "username"),),
)

__all__ = ["SPEC"]
