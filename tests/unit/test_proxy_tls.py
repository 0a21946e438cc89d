"""TLS on proxy_listen_ssl: default certificate, TLS 1.2+, SNI hook (kongtx.proxy.tls)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from kongtx.proxy.tls import (
    ProxyTLSContextFactory,
    ensure_default_certificate,
    generate_self_signed,
)


def test_default_certificate_generated_once(tmp_path: Path) -> None:
    """kong-default.{crt,key} appear under <prefix>/ssl, 2048-bit RSA, CN=localhost, O=Kong; reused."""
    crt, key = ensure_default_certificate(str(tmp_path))
    assert crt == str(tmp_path / "ssl" / "kong-default.crt")
    assert key == str(tmp_path / "ssl" / "kong-default.key")
    cert = x509.load_pem_x509_certificate(Path(crt).read_bytes())
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    subject = cert.subject.rfc4514_string()
    assert "CN=localhost" in subject and "O=Kong" in subject
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    before = Path(crt).read_bytes()
    ensure_default_certificate(str(tmp_path))
    assert Path(crt).read_bytes() == before


def _generate_after(barrier: Any, prefix: str, generated: Any) -> None:
    """In a forked child: ensure the pair once all are ready, reporting each generation."""
    import kongtx.proxy.tls as tls

    real = tls.generate_self_signed

    def counted(common_name: str, days: int = 3650) -> tuple[bytes, bytes]:
        generated.put(os.getpid())
        return real(common_name, days)

    tls.generate_self_signed = counted  # type: ignore[assignment]
    barrier.wait(30)
    ensure_default_certificate(prefix)


def test_default_certificate_generated_by_one_of_several_processes(tmp_path: Path) -> None:
    """Processes starting together on a fresh prefix (a node's workers) end with one matching pair.

    Without the lock each wrote its own certificate and key, and a worker could load
    one process's certificate with another's key ("key values mismatch").
    """
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    barrier, generated = fork.Barrier(4), fork.Queue()
    procs = [
        fork.Process(target=_generate_after, args=(barrier, str(tmp_path), generated))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    assert generated.qsize() == 1  # one process generated, the others found its pair
    crt, key = ensure_default_certificate(str(tmp_path))
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_file(crt)
    ctx.use_privatekey_file(key)
    ctx.check_privatekey()  # raises on a mismatched pair


class FakeConn:
    def __init__(self, sni: bytes | None) -> None:
        self.sni = sni
        self.context: Any = None

    def get_servername(self) -> bytes | None:
        return self.sni

    def set_context(self, ctx: Any) -> None:
        self.context = ctx


def der_pair() -> tuple[bytes, bytes]:
    cert_pem, key_pem = generate_self_signed("api.example.com")
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    return (
        cert.public_bytes(serialization.Encoding.DER),
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def test_sni_hook_swaps_context(tmp_path: Path) -> None:
    """An SNI the hook knows gets that certificate's context; others keep the default."""
    crt, key = ensure_default_certificate(str(tmp_path))
    pair = der_pair()
    asked: list[str] = []

    def hook(sni: str) -> tuple[bytes, bytes] | None:
        asked.append(sni)
        return pair if sni == "api.example.com" else None

    factory = ProxyTLSContextFactory(crt, key, hook)
    conn = FakeConn(b"api.example.com")
    factory._servername(conn)  # type: ignore[arg-type]
    assert conn.context is factory.context_for(*pair)
    other = FakeConn(b"other.com")
    factory._servername(other)  # type: ignore[arg-type]
    assert other.context is None
    none = FakeConn(None)
    factory._servername(none)  # type: ignore[arg-type]
    assert asked == ["api.example.com", "other.com"]


def test_broken_hook_keeps_default(tmp_path: Path) -> None:
    """A hook that raises or returns garbage leaves the default certificate in place."""
    crt, key = ensure_default_certificate(str(tmp_path))
    factory = ProxyTLSContextFactory(crt, key, lambda sni: (b"junk", b"junk"))
    conn = FakeConn(b"x.com")
    factory._servername(conn)  # type: ignore[arg-type]
    assert conn.context is None


def handshake(tmp_path: Path, version: int) -> bool:
    crt, key = ensure_default_certificate(str(tmp_path))
    server_ctx = ProxyTLSContextFactory(crt, key).getContext()
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.set_min_proto_version(version)
    client_ctx.set_max_proto_version(version)
    try:
        client_ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    except SSL.Error:
        pass
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    failed = False
    done = False
    for _ in range(10):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                failed = True
            try:
                data = a.bio_read(65536)
                b.bio_write(data)
            except SSL.WantReadError:
                pass
        if failed:
            break
        try:
            client.do_handshake()
            server.do_handshake()
            done = True
            break
        except SSL.Error:
            pass
    return done and not failed


def test_tls12_minimum(tmp_path: Path) -> None:
    """TLS 1.2 and 1.3 clients complete a handshake; a TLS 1.1 client cannot."""
    assert handshake(tmp_path, SSL.TLS1_2_VERSION)
    assert handshake(tmp_path, SSL.TLS1_3_VERSION)
    assert not handshake(tmp_path, SSL.TLS1_1_VERSION)


def real_client_hello(sni: str | None) -> bytes:
    """The first bytes a real TLS client sends (Python's ssl over memory BIOs)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_client_hello_sni() -> None:
    """The SNI name is read from a real ClientHello; none, garbage or plain HTTP give None."""
    from kongtx.proxy.tls import client_hello_sni

    assert client_hello_sni(real_client_hello("api.example.com")) == "api.example.com"
    assert client_hello_sni(real_client_hello(None)) is None
    assert client_hello_sni(b"GET / HTTP/1.1\r\n") is None
    assert client_hello_sni(b"\x16\x03\x01\x00\x05\x01\x00") is None
    hello = real_client_hello("a.test")
    assert client_hello_sni(hello[:40]) is None


def test_warming_holds_bytes_until_ready() -> None:
    """The ClientHello reaches TLS only once the warmer's Deferred fired (or at once if warm)."""
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from kongtx.proxy.tls import _SNIWarmingFactory

    received: list[bytes] = []

    class Inner(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.append(data)

    pending: dict[str, Deferred[object]] = {}

    def warmer(sni: str) -> Deferred[object] | None:
        if sni == "warm.test":
            return None
        pending[sni] = Deferred()
        return pending[sni]

    from kongtx.clock import Clock as NodeClock

    clock = Clock()
    factory = _SNIWarmingFactory(Factory.forProtocol(Inner), warmer, NodeClock(clock))
    proto = factory.buildProtocol(None)
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    hello = real_client_hello("cold.test")
    proto.dataReceived(hello[:10])
    proto.dataReceived(hello[10:])
    assert received == [] and transport.producerState == "paused"
    pending["cold.test"].callback(None)
    assert b"".join(received) == hello and transport.producerState == "producing"
    proto.dataReceived(b"more")
    assert received[-1] == b"more"

    received.clear()
    warm = factory.buildProtocol(None)
    assert warm is not None
    warm.makeConnection(StringTransport())
    warm.dataReceived(real_client_hello("warm.test"))
    assert received != []

    received.clear()
    slow = factory.buildProtocol(None)
    assert slow is not None
    slow.makeConnection(StringTransport())
    slow.dataReceived(real_client_hello("slow.test"))
    assert received == []
    clock.advance(5.1)  # the datastore is slow: go ahead with the default certificate
    assert received != []


def test_load_certificate_swaps_the_default_context(tmp_path: Path) -> None:
    """kong reload re-reads the default certificate; a broken pair keeps the current one."""
    first = ensure_default_certificate(str(tmp_path / "a"))
    second = ensure_default_certificate(str(tmp_path / "b"))
    tls = ProxyTLSContextFactory(*first)
    before = tls.getContext()
    tls.load_certificate(*second)
    after = tls.getContext()
    assert after is not before

    def served(ctx: SSL.Context) -> bytes:
        cert = SSL.Connection(ctx, None).get_certificate()
        assert cert is not None
        return cert.to_cryptography().public_bytes(serialization.Encoding.DER)

    assert served(after) != served(before)
    assert served(after) == x509.load_pem_x509_certificate(
        Path(second[0]).read_bytes()
    ).public_bytes(serialization.Encoding.DER)
    with pytest.raises(SSL.Error):
        tls.load_certificate(second[0], first[1])  # key of another certificate
    assert tls.getContext() is after
