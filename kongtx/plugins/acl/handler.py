# -*- test-case-name: tests.unit.test_plugin_acl -*-
"""acl at request time: allow or deny the authenticated consumer by group (SPEC §4.4).

Priority 950, below the auth plugins (1000/999), so the consumer is known when
it runs.  The consumer's groups are cached as one list under ``acls:<consumer_id>``,
cleared when any of the consumer's acl rows (or the consumer) changes.

Unlike Kong 0.9, a credential that belongs to no consumer (ldap-auth's) does not
make the plugin load every acl row of the node: it cannot identify the consumer.
The anonymous consumer of Kong 0.10's ``anonymous`` option is a consumer like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.auth_common import Lookups
from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.store.interface import Row

GROUPS_HEADER = "X-Consumer-Groups"
UNIDENTIFIED = {
    "message": "Cannot identify the consumer, add an authentication plugin to use the ACL plugin"
}
FORBIDDEN = {"message": "You cannot consume this service"}


def acls_key(consumer_id: str) -> str:
    """``acls:<consumer_id>`` (SPEC §7.4)."""
    return f"acls:{consumer_id}"


class Handler(BasePlugin):
    """The acl plugin's request-time half."""

    PRIORITY = 950

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.lookups = Lookups(services)
        self.whitelist = frozenset(config.get("whitelist") or ())
        self.blacklist = frozenset(config.get("blacklist") or ())

    @staticmethod
    def _consumer_id(ctx: RequestContext) -> str | None:
        credential = ctx.credential
        if credential is not None and credential.get("consumer_id"):
            return str(credential["consumer_id"])
        if ctx.consumer is not None and ctx.consumer.get("id"):
            return str(ctx.consumer["id"])
        return None

    def access(self, ctx: RequestContext) -> PhaseResult:
        consumer_id = self._consumer_id(ctx)
        if consumer_id is None:
            ctx.respond(403, UNIDENTIFIED)
            return None
        hit, acls = self.lookups.peek(acls_key(consumer_id))
        if hit:
            self._decide(ctx, acls or [])
            return None
        return self._access_async(ctx, consumer_id)

    async def _access_async(self, ctx: RequestContext, consumer_id: str) -> None:
        acls = await self.lookups.rows(acls_key(consumer_id), "acls", {"consumer_id": consumer_id})
        self._decide(ctx, acls)

    def _decide(self, ctx: RequestContext, acls: list[Row]) -> None:
        groups = [str(row["group"]) for row in acls]
        blocked = False
        if self.blacklist and any(g in self.blacklist for g in groups):
            blocked = True
        if self.whitelist and not any(g in self.whitelist for g in groups):
            blocked = True
        if blocked:
            ctx.respond(403, FORBIDDEN)
            return
        if groups:
            ctx.headers.set(GROUPS_HEADER, ", ".join(groups))
        else:
            # ngx.req.set_header(name, "") removes the header: never pass a client's own
            ctx.headers.remove(GROUPS_HEADER)
