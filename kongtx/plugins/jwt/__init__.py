"""The jwt plugin: authenticate consumers by signed JSON Web Tokens (SPEC §4.2)."""

from kongtx.plugins.jwt.schema import CREDENTIALS, SCHEMA
from kongtx.plugins.spec import CredentialRoute, PluginSpec

SPEC = PluginSpec(
    name="jwt",
    priority=1000,
    config_schema=SCHEMA,
    no_consumer=True,
    entities={CREDENTIALS.name: CREDENTIALS},
    routes=(CredentialRoute("jwt", "jwt_secrets", "key"),),
)

__all__ = ["SPEC"]
