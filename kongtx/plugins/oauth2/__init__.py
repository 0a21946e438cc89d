"""The oauth2 plugin: an OAuth 2.0 provider in front of the API (SPEC §4.2, §4.3)."""

from kongtx.plugins.oauth2.schema import AUTHORIZATION_CODES, CREDENTIALS, SCHEMA, TOKENS
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="oauth2",
    priority=1000,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={e.name: e for e in (CREDENTIALS, AUTHORIZATION_CODES, TOKENS)},
    routes=(CredentialRoute("oauth2", "oauth2_credentials", "client_id"),),
)

__all__ = ["SPEC"]
