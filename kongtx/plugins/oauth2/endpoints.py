# -*- test-case-name: tests.unit.test_plugin_oauth2 -*-
"""The oauth2 provider endpoints, ``<prefix>/oauth2/authorize`` and ``<prefix>/oauth2/token``.

They are answered on the proxy by the plugin's own access phase (SPEC §4.3), for
every API that carries the plugin, so no proxy code knows about OAuth 2.0.  The
grants and their messages are Kong 0.9's; where we go further, it is about
secrets: the client secret and the provision key are compared in constant time,
an authorization code is only good for the application it was issued to, and a
code or refresh token is consumed by deleting it *before* the new token is
issued, so two concurrent exchanges of one code cannot both succeed.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from kongtx.plugins.auth_common import Lookups
from kongtx.plugins.auth_secrets import b64decode_loose
from kongtx.plugins.base import RequestContext
from kongtx.plugins.oauth2.params import add_params, https_error, request_params
from kongtx.plugins.oauth2.schema import without_refresh_token
from kongtx.store.interface import Row, RowView

NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
ERROR = "error"
_BASIC = re.compile(r"\s*[Bb]asic\s*(.+)")


def _error(code: str, description: str) -> dict[str, Any]:
    return {ERROR: code, "error_description": description}


def invalid_client() -> dict[str, Any]:
    return _error("invalid_client", "Invalid client authentication")


def invalid_redirect() -> dict[str, Any]:
    return _error(
        "invalid_request",
        "Invalid redirect_uri that does not match with any redirect_uri created with the application",
    )


def credential_key(client_id_or_id: str) -> str:
    """``oauth2_credentials:<client_id>`` or ``oauth2_credentials:<id>`` (SPEC §7.4)."""
    return f"oauth2_credentials:{client_id_or_id}"


def token_key(access_token: str) -> str:
    """``oauth2_token:<access_token>`` (SPEC §7.4)."""
    return f"oauth2_token:{access_token}"


def secrets_equal(stored: Any, given: Any) -> bool:
    """Constant-time equality of two secrets (a missing one never matches)."""
    if not isinstance(stored, str) or not isinstance(given, str):
        return False
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


class Endpoints:
    """The two provider endpoints for one plugin configuration."""

    def __init__(self, config: Mapping[str, Any], lookups: Lookups, clock: Any) -> None:
        self.config = config
        self.lookups = lookups
        self.dao = lookups.dao
        self.clock = clock
        scopes = config.get("scopes")
        self.scopes: list[str] | None = None if scopes is None else [str(s) for s in scopes]
        self.mandatory_scope = bool(config.get("mandatory_scope"))
        self.provision_key = str(config.get("provision_key") or "")
        self.token_expiration = int(config.get("token_expiration") or 0)
        self.accept_terminated = bool(config.get("accept_http_if_already_terminated"))

    # ------------------------------------------------------------- helpers

    def _provision_ok(self, given: str | None) -> bool:
        return secrets_equal(self.provision_key, given)

    def _scopes(self, params: Mapping[str, str]) -> tuple[list[str], dict[str, Any] | None]:
        """The requested scopes, or an ``invalid_scope`` error."""
        scope = params.get("scope")
        if self.scopes is not None and scope is not None:
            chosen = []
            for name in scope.split():
                if name not in self.scopes:
                    return [], _error("invalid_scope", f'"{name}" is an invalid scope')
                chosen.append(name)
            return chosen, None
        if scope is None and self.mandatory_scope:
            return [], _error("invalid_scope", "You must specify a scope")
        return [], None

    async def client(self, client_id: str | None) -> RowView | None:
        """The application with this client_id (``oauth2_credentials:<client_id>``)."""
        if not client_id:
            return None
        return await self.lookups.row(
            credential_key(client_id), "oauth2_credentials", {"client_id": client_id}
        )

    async def _issue(
        self,
        client: RowView,
        userid: str | None,
        scope: str | None,
        state: str | None,
        expiration: int | None = None,
        refresh: bool = True,
    ) -> dict[str, Any]:
        """Insert a token (TTL row when it expires) and the response describing it."""
        expires_in = self.token_expiration if expiration is None else expiration
        row: dict[str, Any] = {
            "credential_id": client["id"],
            "expires_in": expires_in,
            "authenticated_userid": userid,
            "scope": scope,
        }
        if refresh:
            d: Deferred[Row] = Deferred.fromCoroutine(self.dao.insert("oauth2_tokens", row))
        else:
            with without_refresh_token():
                d = Deferred.fromCoroutine(self.dao.insert("oauth2_tokens", row))
        token = await d
        out: dict[str, Any] = {"access_token": token["access_token"], "token_type": "bearer"}
        if expires_in > 0:
            out["expires_in"] = expires_in
        if token.get("refresh_token"):
            out["refresh_token"] = token["refresh_token"]
        if state is not None:
            out["state"] = state
        return out

    # ----------------------------------------------------------- authorize

    async def authorize(self, ctx: RequestContext) -> None:
        """``POST <prefix>/oauth2/authorize``: a code or an implicit token for a logged-in user."""
        params = await request_params(ctx)
        state = params.get("state")
        response: dict[str, Any] = {}
        redirect_uri: str | None = None
        implicit = False
        transport = https_error(ctx, self.accept_terminated)
        if transport is not None:
            response = _error("access_denied", transport)
        elif not self._provision_ok(params.get("provision_key")):
            response = _error("invalid_provision_key", "Invalid provision_key")
        elif not (params.get("authenticated_userid") or "").strip():
            response = _error(
                "invalid_authenticated_userid", "Missing authenticated_userid parameter"
            )
        else:
            response_type = params.get("response_type")
            if not (
                (response_type == "code" and self.config.get("enable_authorization_code"))
                or (response_type == "token" and self.config.get("enable_implicit_grant"))
            ):
                response = _error("unsupported_response_type", "Invalid response_type")
            scopes, scope_error = self._scopes(params)
            if scope_error is not None:
                response = scope_error
            client = await self.client(params.get("client_id"))
            allowed = list(client.get("redirect_uri") or []) if client is not None else []
            if client is None or not allowed:
                response = invalid_client()
            else:
                redirect_uri = params.get("redirect_uri") or allowed[0]
                if redirect_uri not in allowed:
                    response = invalid_redirect()
                    redirect_uri = allowed[0]
            if ERROR not in response and client is not None:
                if response_type == "code":
                    code = await self.dao.insert(
                        "oauth2_authorization_codes",
                        {
                            "credential_id": client["id"],
                            "authenticated_userid": params.get("authenticated_userid"),
                            "scope": " ".join(scopes),
                        },
                    )
                    response = {"code": code["code"]}
                else:
                    # Kong 0.9's implicit grant: a token that does not expire, no refresh token
                    response = await self._issue(
                        client,
                        params.get("authenticated_userid"),
                        " ".join(scopes),
                        None,
                        expiration=0,
                        refresh=False,
                    )
                    implicit = True
        if state is not None:
            response["state"] = state
        status = 400 if ERROR in response else 200
        if redirect_uri is not None:
            ctx.respond(
                status, {"redirect_uri": add_params(redirect_uri, response, implicit)}, NO_CACHE
            )
        else:
            ctx.respond(status, response, NO_CACHE)

    # --------------------------------------------------------------- token

    @staticmethod
    def _client_credentials(
        ctx: RequestContext, params: Mapping[str, str]
    ) -> tuple[str | None, str | None, bool]:
        """(client_id, client_secret, from the Authorization header)."""
        if params.get("client_id"):
            return params.get("client_id"), params.get("client_secret"), False
        authorization = ctx.headers.get("authorization")
        if authorization is None:
            return None, None, False
        m = _BASIC.search(authorization)
        if m is None:
            return None, None, True
        raw = b64decode_loose(m.group(1))
        if raw is None:
            return None, None, True
        decoded = raw.decode("utf-8", "replace").split(":")
        return decoded[0], (decoded[1] if len(decoded) > 1 else None), True

    async def token(self, ctx: RequestContext) -> None:
        """``POST <prefix>/oauth2/token``: the four grants plus refresh."""
        params = await request_params(ctx)
        state = params.get("state")
        response: dict[str, Any] = {}
        status = 400
        www_authenticate: str | None = None
        transport = https_error(ctx, self.accept_terminated)
        if transport is not None:
            response = _error("access_denied", transport)
        else:
            grant = params.get("grant_type")
            if not (
                grant in ("authorization_code", "refresh_token")
                or (grant == "client_credentials" and self.config.get("enable_client_credentials"))
                or (grant == "password" and self.config.get("enable_password_grant"))
            ):
                response = _error("unsupported_grant_type", "Invalid grant_type")
            client_id, client_secret, from_header = self._client_credentials(ctx, params)
            client = await self.client(client_id)
            if grant != "client_credentials":
                allowed = list(client.get("redirect_uri") or []) if client is not None else []
                if client is not None and allowed:
                    redirect_uri = params.get("redirect_uri") or allowed[0]
                    if redirect_uri not in allowed:
                        response = invalid_redirect()
                else:
                    response = invalid_client()
                    if from_header:
                        status, www_authenticate = 401, 'Basic realm="OAuth2.0"'
            if client is not None and not secrets_equal(client.get("client_secret"), client_secret):
                response = invalid_client()
                if from_header:
                    status, www_authenticate = 401, 'Basic realm="OAuth2.0"'
            if ERROR not in response:
                response = await self._grant(grant, client, params, state)
        if state is not None:
            response["state"] = state
        headers = dict(NO_CACHE)
        if ERROR in response:
            if www_authenticate is not None:
                headers["WWW-Authenticate"] = www_authenticate
            else:
                status = 400
        else:
            status = 200
        ctx.respond(status, response, headers)

    async def _grant(
        self,
        grant: str | None,
        client: RowView | None,
        params: Mapping[str, str],
        state: str | None,
    ) -> dict[str, Any]:
        if client is None:
            return invalid_client()
        if grant == "authorization_code":
            code_value = params.get("code")
            code = (
                await self.dao.find("oauth2_authorization_codes", {"code": code_value})
                if code_value
                else None
            )
            if code is None or code.get("credential_id") != client["id"]:
                return _error("invalid_request", "Invalid code")
            # single use: whoever deletes it first gets the token
            if not await self.dao.delete("oauth2_authorization_codes", {"id": code["id"]}):
                return _error("invalid_request", "Invalid code")
            return await self._issue(
                client, code.get("authenticated_userid"), code.get("scope"), state
            )
        if grant == "client_credentials":
            userid = params.get("authenticated_userid")
            if userid is not None and not self._provision_ok(params.get("provision_key")):
                return _error("invalid_provision_key", "Invalid provision_key")
            scopes, scope_error = self._scopes(params)
            if scope_error is not None:
                return scope_error
            return await self._issue(client, userid, " ".join(scopes), state, refresh=False)
        if grant == "password":
            if not self._provision_ok(params.get("provision_key")):
                return _error("invalid_provision_key", "Invalid provision_key")
            userid = params.get("authenticated_userid")
            if not (userid or "").strip():
                return _error(
                    "invalid_authenticated_userid", "Missing authenticated_userid parameter"
                )
            scopes, scope_error = self._scopes(params)
            if scope_error is not None:
                return scope_error
            return await self._issue(client, userid, " ".join(scopes), state)
        # refresh_token
        refresh = params.get("refresh_token")
        old = await self.dao.find("oauth2_tokens", {"refresh_token": refresh}) if refresh else None
        if old is None:
            return _error("invalid_request", "Invalid refresh_token")
        if old.get("credential_id") != client["id"]:
            return invalid_client()
        if not await self.dao.delete("oauth2_tokens", {"id": old["id"]}):
            return _error("invalid_request", "Invalid refresh_token")
        return await self._issue(client, old.get("authenticated_userid"), old.get("scope"), state)
