"""The hmac-auth plugin: HMAC-signed requests (SPEC §4.2)."""

from kongtx.plugins.hmac_auth.schema import CREDENTIALS, SCHEMA
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="hmac-auth",
    priority=999,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={CREDENTIALS.name: CREDENTIALS},
    routes=(CredentialRoute("hmac-auth", "hmacauth_credentials", "username"),),
)

__all__ = ["SPEC"]
