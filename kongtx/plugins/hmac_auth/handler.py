# -*- test-case-name: tests.unit.test_plugin_hmac_auth -*-
"""hmac-auth at request time: HMAC-SHA1 signatures of chosen headers (SPEC §4.2).

The signing string is Kong 0.9's: for each header listed in the Authorization
header, ``request-line`` gives the raw first request line, a present header
``<name as listed>: <value>`` and an absent one ``<name>:``, joined by newlines.
The signature is always HMAC-SHA1 with the credential's secret (the
``algorithm`` parameter is parsed, not checked, as in Kong 0.9), compared in
constant time (SPEC's top table).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.auth_common import CREDENTIAL_USERNAME, AuthPlugin
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.store.interface import RowView

NO_DATE = {
    "message": "HMAC signature cannot be verified, a valid date or x-date header is required "
    "for HMAC Authentication"
}
NOT_VERIFIED = {"message": "HMAC signature cannot be verified"}
MISMATCH = {"message": "HMAC signature does not match"}
_HMAC = re.compile(
    r'\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",\s*headers="(.+)",\s*signature="(.+)"'
)


def credential_key(username: str) -> str:
    """``hmacauth_credentials:<username>`` (SPEC §7.4)."""
    return f"hmacauth_credentials:{username}"


class HmacParams:
    """The parts of an ``hmac`` Authorization header."""

    __slots__ = ("algorithm", "headers", "signature", "username")

    def __init__(self, username: str, algorithm: str, headers: list[str], signature: str) -> None:
        self.username = username
        self.algorithm = algorithm
        self.headers = headers
        self.signature = signature


def parse_hmac(value: str | None) -> HmacParams | None:
    """The parameters of an ``hmac username=…, algorithm=…, headers=…, signature=…`` value."""
    if value is None:
        return None
    m = _HMAC.search(value)
    if m is None:
        return None
    return HmacParams(m.group(1), m.group(2), m.group(3).split(" "), m.group(4))


def parse_http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP date (RFC 1123, RFC 850 or asctime), or None."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # asctime dates carry no zone: HTTP dates are always GMT
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def request_line(ctx: RequestContext) -> str:
    """The raw first line of the request (``GET /path?q HTTP/1.1``).

    The proxy's context carries it when it kept it (``request_line``); otherwise
    it is rebuilt from the method and the raw request target.
    """
    line = getattr(ctx, "request_line", None)
    if isinstance(line, str) and line:
        return line
    target = getattr(ctx, "request_uri", None)
    if not isinstance(target, str) or not target:
        query = "&".join(k if v is None else f"{k}={v}" for k, v in ctx.query)
        target = ctx.path + (f"?{query}" if query else "")
    version = getattr(ctx, "http_version", None) or "HTTP/1.1"
    return f"{ctx.method} {target} {version}"


def signing_string(ctx: RequestContext, names: list[str]) -> str:
    """Kong 0.9's signing string for the listed header names."""
    lines = []
    for name in names:
        values = ctx.headers.get_all(name)
        if values:
            lines.append(f"{name}: {', '.join(values)}")
        elif name == "request-line":
            lines.append(request_line(ctx))
        else:
            lines.append(f"{name}:")
    return "\n".join(lines)


def sign(secret: str, text: str) -> bytes:
    """HMAC-SHA1 of ``text`` with ``secret`` (raw digest)."""
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()


class Handler(AuthPlugin):
    """The hmac-auth plugin's request-time half."""

    PRIORITY = 999

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.clock_skew = float(config.get("clock_skew", 300))
        assert services is not None  # AuthPlugin refused None already
        self.clock = services.clock

    def _date_ok(self, ctx: RequestContext, header: str) -> bool:
        value = ctx.headers.get(header)
        if value is None:
            return False
        when = parse_http_date(value)
        if when is None:
            return False
        now: float = self.clock.seconds()
        return abs(now - when) <= self.clock_skew

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        headers = ctx.headers
        if headers.get("authorization") is None and headers.get("proxy-authorization") is None:
            return self.reject(ctx, 401)
        if not (self._date_ok(ctx, "x-date") or self._date_ok(ctx, "date")):
            return self.reject(ctx, 403, NO_DATE)
        read = ["proxy-authorization"]
        params = parse_hmac(headers.get("proxy-authorization"))
        if params is None:
            read.append("authorization")
            params = parse_hmac(headers.get("authorization"))
        # signed over the headers as the client sent them, before hide_credentials
        text = signing_string(ctx, params.headers) if params is not None else ""
        if self.hide_credentials:
            for name in read:
                headers.remove(name)
        if params is None:
            return self.reject(ctx, 403, NOT_VERIFIED)
        return self._authenticate(ctx, params, text)

    async def _authenticate(self, ctx: RequestContext, params: HmacParams, text: str) -> None:
        credential = await self.lookups.row(
            credential_key(params.username), "hmacauth_credentials", {"username": params.username}
        )
        if credential is None:
            await self.reject_async(ctx, 403, NOT_VERIFIED)
            return
        if not self._signature_ok(params, credential, text):
            await self.reject_async(ctx, 403, MISMATCH)
            return
        consumer = await self.lookups.consumer(credential["consumer_id"])
        if consumer is None:
            await self.reject_async(ctx, 403, NOT_VERIFIED)
            return
        self.success(ctx, consumer, credential)
        ctx.headers.set(CREDENTIAL_USERNAME, str(credential["username"]))

    @staticmethod
    def _signature_ok(params: HmacParams, credential: RowView, text: str) -> bool:
        secret = credential.get("secret")
        if not isinstance(secret, str):
            return False  # no secret set: nothing can match
        try:
            given = base64.b64decode(params.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = sign(secret, text)
        return hmac.compare_digest(expected, given)
