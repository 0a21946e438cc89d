# -*- test-case-name: tests.unit.test_plugin_jwt -*-
"""jwt at request time: HS256/RS256 JSON Web Tokens (SPEC §4.2).

The token's header and claims are decoded here only to give Kong 0.9's exact
messages (``Bad token; invalid typ``...) and to find the credential by
``claims[key_claim_name]``; the signature itself is verified by PyJWT, never by
hand-rolled crypto.  ``exp``/``nbf`` are checked only when listed in
``claims_to_verify``, as Kong 0.9 does, against the node's clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import warnings
from collections.abc import Mapping
from typing import Any

import jwt as pyjwt
from jwt.exceptions import InvalidSignatureError, PyJWTError
from jwt.warnings import InsecureKeyLengthWarning

from kongtx.plugins.auth_common import AuthPlugin
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.store.interface import RowView

ALGORITHMS = ("HS256", "RS256")
_BEARER = re.compile(r"\s*[Bb]earer\s+(.+)")


def credential_key(key: str) -> str:
    """``jwtauth_credentials:<key>`` (SPEC §7.4)."""
    return f"jwtauth_credentials:{key}"


def b64url_decode(text: str) -> bytes | None:
    """base64url with optional padding, as Kong's jwt parser decodes; None when invalid."""
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class DecodedToken:
    """A JWT split and decoded (not verified)."""

    __slots__ = ("claims", "header", "token")

    def __init__(self, token: str, header: dict[str, Any], claims: dict[str, Any]) -> None:
        self.token = token
        self.header = header
        self.claims = claims


def decode_token(token: str) -> tuple[DecodedToken | None, str | None]:
    """``(decoded, None)`` or ``(None, reason)`` with Kong 0.9's reasons (``invalid JSON``...)."""
    parts = token.split(".")
    if len(parts) < 3:
        return None, "invalid JSON"
    header_raw, claims_raw, signature = b64url_decode(parts[0]), b64url_decode(parts[1]), parts[2]
    try:
        if header_raw is None or claims_raw is None:
            raise ValueError("not base64")
        header = json.loads(header_raw)
        claims = json.loads(claims_raw)
    except (ValueError, UnicodeDecodeError):
        return None, "invalid JSON"
    if not isinstance(header, dict):
        return None, "invalid JSON"
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        return None, "invalid typ"
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        return None, "invalid alg"
    if not isinstance(claims, dict):
        return None, "invalid claims"
    if b64url_decode(signature) is None:
        return None, "invalid signature"
    return DecodedToken(".".join(parts[:3]), header, claims), None


def verify_signature(token: str, algorithm: str, key: bytes | str) -> bool | None:
    """PyJWT's verdict on the signature: True, False (mismatch), None (unusable key)."""
    try:
        with warnings.catch_warnings():
            # a jwt secret is the operator's choice and may be short: PyJWT would warn
            # about it on every request it verifies, flooding the log
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            pyjwt.PyJWS().decode_complete(token, key=key, algorithms=[algorithm])
    except InvalidSignatureError:
        return False
    except (PyJWTError, ValueError, TypeError):
        return None
    return True


def check_claims(claims: Mapping[str, Any], to_verify: list[str], now: int) -> dict[str, str]:
    """Errors of the registered claims listed in ``to_verify`` (Kong 0.9's messages)."""
    errors: dict[str, str] = {}
    for name in to_verify:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors[name] = "must be a number"
        elif name == "exp" and value <= now:
            errors[name] = "token expired"
        elif name == "nbf" and value > now:
            errors[name] = "token not valid yet"
    return errors


class Handler(AuthPlugin):
    """The jwt plugin's request-time half."""

    PRIORITY = 1000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        names = config.get("uri_param_names")
        self.uri_param_names: tuple[str, ...] = tuple(["jwt"] if names is None else names)
        self.key_claim_name = str(config.get("key_claim_name") or "iss")
        self.secret_is_base64 = bool(config.get("secret_is_base64"))
        self.claims_to_verify: list[str] = list(config.get("claims_to_verify") or [])
        assert services is not None  # AuthPlugin refused None already
        self.clock = services.clock

    def _token(self, ctx: RequestContext) -> tuple[str | None, str | None]:
        """``(token, None)``, ``(None, None)`` when absent, ``(None, error)``."""
        for name in self.uri_param_names:
            values = [v for k, v in ctx.query if k == name]
            if len(values) > 1:
                return None, "Multiple tokens provided"
            if values:
                if values[0] is None:
                    return None, "Unrecognizable token"
                return values[0], None
        authorization = ctx.headers.get("authorization")
        if authorization is not None:
            m = _BEARER.search(authorization)
            if m is not None:
                return m.group(1), None
        return None, None

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        token, error = self._token(ctx)
        if error is not None:
            return self.reject(ctx, 401, {"message": error})
        if token is None:
            return self.reject(ctx, 401)
        decoded, reason = decode_token(token)
        if decoded is None:
            return self.reject(ctx, 401, {"message": f"Bad token; {reason}"})
        key = decoded.claims.get(self.key_claim_name)
        if key is None or isinstance(key, dict | list):
            return self.reject(
                ctx, 401, {"message": f"No mandatory '{self.key_claim_name}' in claims"}
            )
        return self._authenticate(ctx, decoded, key if isinstance(key, str) else json.dumps(key))

    async def _authenticate(self, ctx: RequestContext, token: DecodedToken, key: str) -> None:
        name = self.key_claim_name
        secret = await self.lookups.row(credential_key(key), "jwt_secrets", {"key": key})
        if secret is None:
            await self.reject_async(
                ctx, 403, {"message": f"No credentials found for given '{name}'"}
            )
            return
        error = self._verify(token, secret)
        if error is not None:
            await self.reject_async(ctx, 403, error)
            return
        consumer = await self.lookups.consumer(secret["consumer_id"])
        if consumer is None:
            await self.reject_async(
                ctx, 403, {"message": f"Could not find consumer for '{name}={key}'"}
            )
            return
        self.success(ctx, consumer, secret)

    def _verify(self, token: DecodedToken, secret: RowView) -> Mapping[str, str] | None:
        """The 403 body when the token does not verify with ``secret``, else None."""
        algorithm = secret.get("algorithm") or "HS256"
        if token.header.get("alg") != algorithm:
            return {"message": "Invalid algorithm"}
        value = secret.get("secret") if algorithm == "HS256" else secret.get("rsa_public_key")
        key: bytes | str | None = value if isinstance(value, str) and value else None
        if key is not None and self.secret_is_base64:
            key = b64url_decode(str(key))
        if not key:
            return {"message": "Invalid key/secret"}
        verdict = verify_signature(token.token, algorithm, key)
        if verdict is None:
            return {"message": "Invalid key/secret"}
        if not verdict:
            return {"message": "Invalid signature"}
        errors = check_claims(token.claims, self.claims_to_verify, int(self.clock.seconds()))
        return errors or None
