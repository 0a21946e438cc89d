# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""ssl plugin config (SPEC §4.4): PEM certificate and key, checked and cached as DER.

Why the DER caches live in the config: the certificate phase runs during the TLS
handshake, where parsing PEM for every connection would cost; Kong computes the
base64 DER once at validation and so do we.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kongtx.store.schemas import Field, Schema


def check_cert(value: Any, values: dict[str, Any]) -> str | None:
    """The certificate must be PEM; its base64 DER is cached in ``_cert_der_cache``."""
    try:
        cert = x509.load_pem_x509_certificate(value.encode())
        der = cert.public_bytes(serialization.Encoding.DER)
    except (ValueError, TypeError, UnicodeError):
        return "Invalid SSL certificate"
    values["_cert_der_cache"] = base64.b64encode(der).decode("ascii")
    return None


def check_key(value: Any, values: dict[str, Any]) -> str | None:
    """The key must be an unencrypted PEM private key; its base64 DER goes to ``_key_der_cache``."""
    try:
        key = serialization.load_pem_private_key(value.encode(), password=None)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except (ValueError, TypeError, UnicodeError):
        return "Invalid SSL certificate key"
    values["_key_der_cache"] = base64.b64encode(der).decode("ascii")
    return None


SCHEMA = Schema(
    no_consumer=True,
    fields={
        "cert": Field(type="string", required=True, func=check_cert),
        "key": Field(type="string", required=True, func=check_key),
        "only_https": Field(type="boolean", default=False),
        "accept_http_if_already_terminated": Field(type="boolean", default=False),
        # internal: computed by check_cert/check_key, never meant to be set by hand
        "_cert_der_cache": Field(type="string", immutable=True),
        "_key_der_cache": Field(type="string", immutable=True),
    },
)
