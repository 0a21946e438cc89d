# -*- test-case-name: tests.unit.test_plugin_oauth2 -*-
"""oauth2 at request time: the provider endpoints and bearer-token checks (SPEC §4.3).

``POST <prefix>/oauth2/authorize`` and ``POST <prefix>/oauth2/token`` are answered
here, in the access phase, by :class:`kongtx.plugins.oauth2.endpoints.Endpoints`
(``<prefix>`` is the API's ``request_path`` when the request starts with it).
Every other request must carry an access token: the ``access_token`` parameter
(query string or body) or ``Authorization: Bearer|Token <t>``.  Tokens are read
through the cache (``oauth2_token:<access_token>``); a revoked token's key is
cleared on commit, and an expired one is refused by its ``created_at`` and
``expires_in`` even while cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.auth_common import AuthPlugin, set_or_clear
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.oauth2.endpoints import Endpoints, credential_key, token_key
from kongtx.plugins.oauth2.params import body_params
from kongtx.plugins.request_transformer.handler import decode_args, encode_args
from kongtx.store.interface import RowView

MISSING = {"error": "invalid_request", "error_description": "The access token is missing"}
INVALID_DESCRIPTION = "The access token is invalid or has expired"
INVALID = {"error": "invalid_token", "error_description": INVALID_DESCRIPTION}
MISSING_HEADERS = {"WWW-Authenticate": 'Bearer realm="service"'}
INVALID_HEADERS = {
    "WWW-Authenticate": 'Bearer realm="service" error="invalid_token" '
    f'error_description="{INVALID_DESCRIPTION}"'
}
SCOPE_HEADER = "X-Authenticated-Scope"
USERID_HEADER = "X-Authenticated-Userid"
_BODY_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")


class Handler(AuthPlugin):
    """The oauth2 plugin's request-time half."""

    PRIORITY = 1000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        assert services is not None  # AuthPlugin refused None already
        self.clock = services.clock
        self.endpoints = Endpoints(config, self.lookups, services.clock)

    def _endpoint(self, ctx: RequestContext) -> str | None:
        """``"authorize"`` or ``"token"`` when this request is for a provider endpoint."""
        if ctx.method != "POST":
            return None
        path = ctx.path
        request_path = str(ctx.api.get("request_path") or "")
        prefix = request_path.rstrip("/") if request_path and path.startswith(request_path) else ""
        rest = path[len(prefix) :]
        if rest.endswith("/"):
            rest = rest[:-1]
        if rest == "/oauth2/authorize":
            return "authorize"
        if rest == "/oauth2/token":
            return "token"
        return None

    def access(self, ctx: RequestContext) -> PhaseResult:
        endpoint = self._endpoint(ctx)
        if endpoint == "authorize":
            return self.endpoints.authorize(ctx)
        if endpoint == "token":
            return self.endpoints.token(ctx)
        return super().access(ctx)

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        return self._authenticate(ctx)

    async def _find_token(self, ctx: RequestContext) -> str | None:
        """The access token (query, then body, then header); hides it if configured."""
        for key, value in ctx.query:
            if key == "access_token" and value is not None:
                if self.hide_credentials:
                    await self._hide_param(ctx)
                return value
        content_type = (ctx.headers.get("content-type") or "").lower()
        if any(t in content_type for t in _BODY_TYPES):
            params = body_params(content_type, await ctx.read_body())
            if "access_token" in params:
                if self.hide_credentials:
                    await self._hide_param(ctx)
                return params["access_token"]
        authorization = ctx.headers.get("authorization")
        if authorization is not None:
            parts = authorization.split()
            if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
                if self.hide_credentials:
                    ctx.headers.remove("authorization")
                return parts[1]
        return None

    async def _hide_param(self, ctx: RequestContext) -> None:
        """Drop ``access_token`` from the query and from a urlencoded non-GET body."""
        if any(k == "access_token" for k, _ in ctx.query):
            ctx.query = [(k, v) for k, v in ctx.query if k != "access_token"]
        content_type = (ctx.headers.get("content-type") or "").lower()
        if ctx.method != "GET" and "application/x-www-form-urlencoded" in content_type:
            args = decode_args(await ctx.read_body())
            kept = [(k, v) for k, v in args if k != "access_token"]
            if len(kept) != len(args):
                ctx.set_body(encode_args(kept))

    async def _authenticate(self, ctx: RequestContext) -> None:
        # only a verified token speaks for the user (also when falling back to anonymous)
        ctx.headers.remove(SCOPE_HEADER)
        ctx.headers.remove(USERID_HEADER)
        access_token = await self._find_token(ctx)
        if access_token is None:
            await self.reject_async(ctx, 401, MISSING, MISSING_HEADERS)
            return
        token = await self.lookups.row(
            token_key(access_token), "oauth2_tokens", {"access_token": access_token}
        )
        if token is None or self._expired(token):
            await self.reject_async(ctx, 401, INVALID, INVALID_HEADERS)
            return
        credential = await self.lookups.row(
            credential_key(token["credential_id"]),
            "oauth2_credentials",
            {"id": token["credential_id"]},
        )
        consumer = (
            await self.lookups.consumer(credential["consumer_id"])
            if credential is not None
            else None
        )
        if credential is None or consumer is None:
            # the application (or its consumer) is gone: its tokens are worthless
            await self.reject_async(ctx, 401, INVALID, INVALID_HEADERS)
            return
        self.success(ctx, consumer, credential)
        set_or_clear(ctx, SCOPE_HEADER, token.get("scope"))
        set_or_clear(ctx, USERID_HEADER, token.get("authenticated_userid"))

    def _expired(self, token: RowView) -> bool:
        expires_in = token.get("expires_in") or 0
        if expires_in <= 0:
            return False
        created_at = token.get("created_at") or 0
        return bool(self.clock.millis() - created_at > expires_in * 1000)
