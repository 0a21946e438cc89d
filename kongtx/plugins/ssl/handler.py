# -*- test-case-name: tests.unit.test_plugin_ssl -*-
"""ssl: a per-API certificate for SNI, and optionally HTTPS only (SPEC §3.6, §4.4).

The certificate is decoded once, when the handler is built for a configuration:
from the base64 DER the schema cached in ``_cert_der_cache``/``_key_der_cache``,
else from the PEM ``cert``/``key``.  The handshake then only hands the bytes
over (Kong 0.9 kept them in its cache as ``ssl:<api_id>``; a handler lives exactly
as long as its configuration, which is what that cache entry approximated).

``only_https``: a plain-HTTP request gets 426 with ``Connection: Upgrade`` and
``Upgrade: TLS/1.0, HTTP/1.1``; with ``accept_http_if_already_terminated`` a
single ``X-Forwarded-Proto: https`` (a TLS-terminating balancer in front) counts
as HTTPS, several such headers do not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kongtx.log import logger
from kongtx.plugins.base import (
    BasePlugin,
    CertificateContext,
    PhaseResult,
    PluginServices,
    RequestContext,
)

UPGRADE_HEADERS = {"Connection": "Upgrade", "Upgrade": "TLS/1.0, HTTP/1.1"}
UPGRADE_BODY = {"message": "Please use HTTPS protocol"}


def cert_der(config: Mapping[str, Any]) -> bytes:
    """The certificate as DER, from the cached base64 or the PEM."""
    cached = config.get("_cert_der_cache")
    if cached:
        return base64.b64decode(cached, validate=True)
    cert = x509.load_pem_x509_certificate(str(config["cert"]).encode())
    return cert.public_bytes(serialization.Encoding.DER)


def key_der(config: Mapping[str, Any]) -> bytes:
    """The private key as (PKCS#8) DER, from the cached base64 or the PEM."""
    cached = config.get("_key_der_cache")
    if cached:
        return base64.b64decode(cached, validate=True)
    key = serialization.load_pem_private_key(str(config["key"]).encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def is_https(ctx: RequestContext, accept_terminated: bool) -> bool:
    """Kong's ``check_https``: the scheme, or one ``X-Forwarded-Proto: https`` if allowed."""
    if ctx.scheme.lower() == "https":
        return True
    if not accept_terminated:
        return False
    forwarded = ctx.headers.get_all("X-Forwarded-Proto")
    return len(forwarded) == 1 and forwarded[0].lower() == "https"


class Handler(BasePlugin):
    """The ssl plugin's request-time half."""

    PRIORITY = 3000

    _logger = logger()

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.only_https = bool(config.get("only_https"))
        self.accept_terminated = bool(config.get("accept_http_if_already_terminated"))
        self.certificate_der: tuple[bytes, bytes] | None
        try:
            self.certificate_der = (cert_der(config), key_der(config))
        except (KeyError, ValueError, TypeError, binascii.Error):
            # the schema validated both; a row edited behind the Admin API's back
            # must not break the API's plain requests, only its certificate
            self._logger.failure("ssl plugin: unusable certificate or key; serving the default one")
            self.certificate_der = None

    def certificate(self, ctx: CertificateContext) -> None:
        if self.certificate_der is not None:
            ctx.set_certificate(*self.certificate_der)

    def access(self, ctx: RequestContext) -> PhaseResult:
        if self.only_https and not is_https(ctx, self.accept_terminated):
            ctx.respond(426, UPGRADE_BODY, UPGRADE_HEADERS)
        return None
