"""The key-auth plugin: authenticate consumers by API key (SPEC §4.2)."""

from kongtx.plugins.key_auth.schema import CREDENTIALS, SCHEMA
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="key-auth",
    priority=1000,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={CREDENTIALS.name: CREDENTIALS},
    routes=(CredentialRoute("key-auth", "keyauth_credentials", "key"),),
)

__all__ = ["SPEC"]
