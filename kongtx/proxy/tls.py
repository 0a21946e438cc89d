# -*- test-case-name: tests.unit.test_proxy_tls -*-
"""TLS on ``proxy_listen_ssl`` (SPEC §3.6 and the "TLS" row of SPEC's differences).

* TLS 1.2 and later only (Kong 0.9 still offered 1.0 and 1.1);
* without ``ssl_cert``/``ssl_cert_key``, a self-signed 2048-bit RSA certificate
  (CN=localhost, O=Kong, like Kong's 1024-bit one) is generated once under
  ``<prefix>/ssl/kong-default.{crt,key}`` and reused on later starts;
* SNI: the handshake's server name goes to a hook (the ``ssl`` plugin's
  certificate phase, through the plugin runtime) which may return a per-API
  certificate; no SNI, no API, or no plugin -> the default certificate.  The
  OpenSSL servername callback cannot wait, so the hook is synchronous.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IStreamServerEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger

log = logger("kongtx.proxy.tls")

#: Given the SNI name, the (certificate DER, key DER) to serve, or ``None``.
CertificateHook = Callable[[str], tuple[bytes, bytes] | None]


def ensure_default_certificate(prefix: str) -> tuple[str, str]:
    """Paths of ``<prefix>/ssl/kong-default.{crt,key}``, generating them if missing.

    The check and the generation hold an exclusive lock on ``<prefix>/ssl/.default.lock``:
    a node's proxy workers start together on a fresh prefix, and two processes each
    writing a pair of their own left one's certificate next to the other's key (OpenSSL:
    "key values mismatch", the worker died).  With the lock the first one generates
    and the others find the pair.
    """
    directory = os.path.join(prefix, "ssl")
    cert_path = os.path.join(directory, "kong-default.crt")
    key_path = os.path.join(directory, "kong-default.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".default.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return cert_path, key_path
        cert_pem, key_pem = generate_self_signed("localhost")
        _write(key_path, key_pem, 0o600)
        _write(cert_path, cert_pem, 0o644)
    log.info("generated the default certificate {path}", path=cert_path)
    return cert_path, key_path


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate_self_signed(common_name: str, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed 2048-bit RSA certificate and key, PEM encoded."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "California"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "San Francisco"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kong"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IT Department"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _base_context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


@implementer(IOpenSSLContextFactory)
class ProxyTLSContextFactory:
    """The server context for ``proxy_listen_ssl``, with the SNI hook.

    Per-API contexts are built once per distinct certificate and kept (a handful of
    APIs carry the ssl plugin; a context per handshake would be slow).
    """

    def __init__(self, cert_path: str, key_path: str, hook: CertificateHook | None = None) -> None:
        self._hook = hook
        self._per_cert: dict[tuple[bytes, bytes], SSL.Context] = {}
        self.load_certificate(cert_path, key_path)

    def load_certificate(self, cert_path: str, key_path: str) -> None:
        """(Re)read the default certificate: ``kong reload`` picks up renewed files.

        New handshakes get the new context; established connections keep theirs.
        A file that does not load raises and leaves the current context in place.
        """
        ctx = _base_context()
        ctx.use_certificate_chain_file(cert_path)
        ctx.use_privatekey_file(key_path)
        ctx.check_privatekey()
        ctx.set_tlsext_servername_callback(self._servername)
        self._context = ctx

    def getContext(self) -> SSL.Context:
        """What ``twisted.internet.ssl``'s server endpoints ask for."""
        return self._context

    def context_for(self, cert_der: bytes, key_der: bytes) -> SSL.Context:
        """A (cached) context serving this DER certificate and key."""
        ctx = self._per_cert.get((cert_der, key_der))
        if ctx is None:
            ctx = _base_context()
            ctx.use_certificate(x509.load_der_x509_certificate(cert_der))  # type: ignore[arg-type]
            key = serialization.load_der_private_key(key_der, password=None)
            ctx.use_privatekey(key)  # type: ignore[arg-type]
            ctx.check_privatekey()
            if len(self._per_cert) > 1024:
                self._per_cert.clear()
            self._per_cert[(cert_der, key_der)] = ctx
        return ctx

    def _servername(self, conn: SSL.Connection) -> None:
        if self._hook is None:
            return
        raw = conn.get_servername()
        if not raw:
            return
        try:
            found = self._hook(raw.decode("idna"))
            if found is not None:
                conn.set_context(self.context_for(*found))
        except Exception:
            # A broken per-API certificate must not break the handshake: default cert.
            log.failure("certificate phase failed for SNI {sni}", sni=raw)


# --------------------------------------------------------------------- SNI warm-up
#
# The SNI callback runs inside the handshake and cannot wait, but the API and its
# plugin chain may not be cached yet (just started, or an Admin change invalidated
# them): the first client would get the default certificate.  So the proxy reads the
# ClientHello itself first, and when the name is not warm yet, it loads the router
# and the API's chain (bounded by a timeout) before OpenSSL sees a single byte.

#: Give up waiting for the datastore after this long; the default cert is served.
WARM_TIMEOUT = 5.0
_MAX_HELLO = 16384 + 5

#: Given an SNI name: ``None`` when everything is cached, else a Deferred that fires
#: (with anything) once it is.
SNIWarmer = Callable[[str], "Deferred[object] | None"]


def client_hello_sni(data: bytes) -> str | None:
    """The server name in a TLS ClientHello record, or ``None`` (absent or unparsable)."""
    try:
        if len(data) < 5 or data[0] != 0x16:
            return None
        end = min(len(data), 5 + int.from_bytes(data[3:5], "big"))
        if data[5] != 0x01:  # handshake type: client_hello
            return None
        pos = 5 + 4 + 2 + 32  # handshake header, client_version, random
        pos += 1 + data[pos]  # session_id
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")  # cipher_suites
        pos += 1 + data[pos]  # compression_methods
        ext_end = min(end, pos + 2 + int.from_bytes(data[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= ext_end:
            ext_type = int.from_bytes(data[pos : pos + 2], "big")
            ext_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
            pos += 4
            if ext_type == 0:  # server_name
                list_end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
                p = pos + 2
                while p + 3 <= list_end:
                    name_len = int.from_bytes(data[p + 1 : p + 3], "big")
                    if data[p] == 0:  # host_name
                        return data[p + 3 : p + 3 + name_len].decode("idna")
                    p += 3 + name_len
                return None
            pos += ext_len
    except (IndexError, UnicodeError, ValueError):
        return None
    return None


class _SNIWarmingProtocol(ProtocolWrapper):
    """Holds the first TLS bytes until the SNI name's certificate can be chosen."""

    factory: _SNIWarmingFactory

    def __init__(self, factory: _SNIWarmingFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._buffer = b""
        self._passthrough = False

    def dataReceived(self, data: bytes) -> None:
        if self._passthrough:
            self.wrappedProtocol.dataReceived(data)
            return
        self._buffer += data
        buf = self._buffer
        if len(buf) < 5:
            return
        if buf[0] != 0x16:
            self._flush()
            return
        if len(buf) < 5 + int.from_bytes(buf[3:5], "big") and len(buf) < _MAX_HELLO:
            return
        sni = client_hello_sni(buf)
        pending = self.factory.warmer(sni) if sni else None
        if pending is None:
            self._flush()
            return
        transport: Any = self.transport
        transport.pauseProducing()

        def ready(_: object) -> None:
            if transport.connected:
                transport.resumeProducing()
            self._flush()

        # Bounded on the node clock: a slow datastore costs the default certificate,
        # never a stuck handshake.
        timer = self.factory.clock.call_later(WARM_TIMEOUT, pending.cancel)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        pending.addBoth(stop_timer)
        pending.addBoth(ready)

    def _flush(self) -> None:
        self._passthrough = True
        data, self._buffer = self._buffer, b""
        if data and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)


class _SNIWarmingFactory(WrappingFactory[_SNIWarmingProtocol]):
    protocol = _SNIWarmingProtocol

    def __init__(self, wrapped: Any, warmer: SNIWarmer, clock: Clock) -> None:
        super().__init__(wrapped)
        self.warmer = warmer
        self.clock = clock
        self.noisy = False


@implementer(IStreamServerEndpoint)
class SNIWarmingTLSEndpoint:
    """A TLS server endpoint that warms the SNI name's certificate before the handshake.

    ``listen(site)`` keeps ``site`` as the service's factory (so connection statistics
    still find it) and wraps it in TLS and in the warm-up reader underneath.
    """

    def __init__(
        self,
        tcp_endpoint: IStreamServerEndpoint,
        tls: ProxyTLSContextFactory,
        warmer: SNIWarmer,
        clock: Clock,
    ) -> None:
        self._tcp = tcp_endpoint
        self._tls = tls
        self._warmer = warmer
        self._clock = clock

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        tls_factory = TLSMemoryBIOFactory(self._tls, False, protocolFactory)
        tls_factory.noisy = False
        result: Deferred[IListeningPort] = self._tcp.listen(
            _SNIWarmingFactory(tls_factory, self._warmer, self._clock)
        )
        return result
