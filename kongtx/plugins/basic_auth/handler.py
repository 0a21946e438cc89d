# -*- test-case-name: tests.unit.test_plugin_basic_auth -*-
"""basic-auth at request time: ``Authorization: Basic`` user and password (SPEC §4.2).

Our difference from Kong 0.9 (SPEC's top table): passwords are stored with
scrypt (legacy SHA-1 rows still verify, see :mod:`kongtx.plugins.basic_auth.crypto`),
every comparison is constant-time, and the slow verification runs in a thread,
never on the reactor.  A password that verified once is remembered as a keyed
digest (:class:`kongtx.plugins.auth_secrets.SecretDigests`) so that later
requests of the same client do not pay for scrypt again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.auth_common import CREDENTIAL_USERNAME, AuthPlugin
from kongtx.plugins.auth_secrets import SecretDigests, parse_user_pass, run_in_thread
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.basic_auth.crypto import is_legacy_hash, verify_basicauth_password
from kongtx.store.interface import RowView

REALM = 'Basic realm="kong"'
INVALID = {"message": "Invalid authentication credentials"}
_BASIC = re.compile(r"\s*[Bb]asic\s*(.+)")


def credential_key(username: str) -> str:
    """``basicauth_credentials:<username>`` (SPEC §7.4)."""
    return f"basicauth_credentials:{username}"


def parse_basic(value: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from a ``Basic <b64(user:pass)>`` header value, or None."""
    return parse_user_pass(value, _BASIC)


class Handler(AuthPlugin):
    """The basic-auth plugin's request-time half."""

    PRIORITY = 1000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.reactor = services.reactor if services is not None else None
        self.digests = SecretDigests()

    def _read(self, ctx: RequestContext, header: str) -> tuple[str, str] | None:
        parsed = parse_basic(ctx.headers.get(header))
        if self.hide_credentials:
            ctx.headers.remove(header)
        return parsed

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        headers = ctx.headers
        if headers.get("authorization") is None and headers.get("proxy-authorization") is None:
            return self.reject(ctx, 401, None, {"WWW-Authenticate": REALM})
        return self._authenticate(ctx)

    async def _load(self, username: str) -> RowView | None:
        return await self.lookups.row(
            credential_key(username), "basicauth_credentials", {"username": username}
        )

    async def _authenticate(self, ctx: RequestContext) -> None:
        credential: RowView | None = None
        given = self._read(ctx, "proxy-authorization")
        if given is not None:
            credential = await self._load(given[0])
        if credential is None:
            given = self._read(ctx, "authorization")
            if given is not None:
                credential = await self._load(given[0])
        if credential is None or given is None or not await self._verify(credential, given[1]):
            await self.reject_async(ctx, 403, INVALID)
            return
        consumer = await self.lookups.consumer(credential["consumer_id"])
        if consumer is None:
            await self.reject_async(ctx, 403, INVALID)
            return
        self.success(ctx, consumer, credential)
        ctx.headers.set(CREDENTIAL_USERNAME, str(credential["username"]))

    async def _verify(self, credential: RowView, password: str) -> bool:
        stored = credential.get("password")
        if not isinstance(stored, str) or not stored:
            return False
        consumer_id = str(credential.get("consumer_id") or "")
        if is_legacy_hash(stored):
            # one SHA-1: cheap enough for the reactor thread, and constant-time inside
            return verify_basicauth_password(stored, password, consumer_id)
        memo = self.digests.matches(stored, password)
        if memo is not None:
            return memo
        ok = await run_in_thread(
            self.reactor, lambda: verify_basicauth_password(stored, password, consumer_id)
        )
        if ok:
            self.digests.remember(stored, password)
        return ok
