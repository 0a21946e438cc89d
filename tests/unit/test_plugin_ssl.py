"""The ssl plugin at request time: per-API certificate and only_https (SPEC §3.6, §4.4)."""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.ssl.handler import Handler
from tests.fakes import FakeCertificateContext, FakeContext, self_signed_certificate

CERT_PEM, KEY_PEM, CERT_DER, KEY_DER = self_signed_certificate()


def config(**extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cert": CERT_PEM,
        "key": KEY_PEM,
        "only_https": False,
        "accept_http_if_already_terminated": False,
        "_cert_der_cache": base64.b64encode(CERT_DER).decode(),
        "_key_der_cache": base64.b64encode(KEY_DER).decode(),
    }
    conf.update(extra)
    return conf


class CertificateTests(SynchronousTestCase):
    def test_serves_cached_der(self) -> None:
        """The certificate phase hands over the DER the schema cached in the config."""
        ctx = FakeCertificateContext("ssl.example.com", {"id": "api"})
        Handler(config()).certificate(ctx)
        self.assertEqual(ctx.chosen, (CERT_DER, KEY_DER))

    def test_pem_when_no_cache(self) -> None:
        """Without the DER caches the PEM cert and key are converted once."""
        conf = config()
        del conf["_cert_der_cache"], conf["_key_der_cache"]
        ctx = FakeCertificateContext("ssl.example.com", {"id": "api"})
        Handler(conf).certificate(ctx)
        self.assertEqual(ctx.chosen, (CERT_DER, KEY_DER))

    def test_unusable_certificate_falls_back_to_default(self) -> None:
        """A broken cert is logged; the handshake keeps the default certificate."""
        conf = config(_cert_der_cache="***not base64***")
        h = Handler(conf)
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        ctx = FakeCertificateContext("ssl.example.com", {"id": "api"})
        h.certificate(ctx)
        self.assertIsNone(ctx.chosen)
        # the plain-HTTP side still works
        self.assertIsNone(h.access(FakeContext()))


class OnlyHttpsTests(SynchronousTestCase):
    def test_http_refused_with_426(self) -> None:
        """only_https: a plain-HTTP request gets 426 with the Upgrade headers."""
        ctx = FakeContext(scheme="http")
        Handler(config(only_https=True)).access(ctx)
        self.assertEqual(
            ctx.response,
            (
                426,
                {"message": "Please use HTTPS protocol"},
                {"Connection": "Upgrade", "Upgrade": "TLS/1.0, HTTP/1.1"},
            ),
        )

    def test_https_passes(self) -> None:
        """only_https lets HTTPS requests through."""
        ctx = FakeContext(scheme="https")
        Handler(config(only_https=True)).access(ctx)
        self.assertFalse(ctx.responded)

    def test_http_allowed_without_only_https(self) -> None:
        """Without only_https plain HTTP is proxied."""
        ctx = FakeContext(scheme="http")
        Handler(config()).access(ctx)
        self.assertFalse(ctx.responded)

    def test_forwarded_proto_honoured_when_allowed(self) -> None:
        """accept_http_if_already_terminated trusts one X-Forwarded-Proto: https (any case)."""
        ctx = FakeContext(headers={"X-Forwarded-Proto": "HTTPS"})
        Handler(config(only_https=True, accept_http_if_already_terminated=True)).access(ctx)
        self.assertFalse(ctx.responded)

    def test_forwarded_proto_ignored_by_default(self) -> None:
        """Without accept_http_if_already_terminated X-Forwarded-Proto does not count."""
        ctx = FakeContext(headers={"X-Forwarded-Proto": "https"})
        Handler(config(only_https=True)).access(ctx)
        self.assertEqual(ctx.status, 426)

    def test_several_forwarded_proto_refused(self) -> None:
        """Several X-Forwarded-Proto headers are refused (Kong errs on the side of safety)."""
        ctx = FakeContext(headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "https")])
        Handler(config(only_https=True, accept_http_if_already_terminated=True)).access(ctx)
        self.assertEqual(ctx.status, 426)

    def test_forwarded_http_refused(self) -> None:
        """X-Forwarded-Proto: http is plain HTTP."""
        ctx = FakeContext(headers={"X-Forwarded-Proto": "http"})
        Handler(config(only_https=True, accept_http_if_already_terminated=True)).access(ctx)
        self.assertEqual(ctx.status, 426)
