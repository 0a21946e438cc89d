"""TLS on proxy_listen_ssl through a real node: default cert, TLS 1.2+, SNI certificates."""

from __future__ import annotations

import json
import os
import socket
import ssl
import uuid
import warnings

import pytest
from cryptography import x509
from proxy_support import Node, Upstream, http

from kongtx.proxy.tls import generate_self_signed


def client_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def peer_certificate(port: int, sni: str | None) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context().wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_default_certificate(kong_node: Node) -> None:
    """Without SNI the default self-signed cert (CN=localhost, O=Kong) from the prefix is served."""
    cert = peer_certificate(kong_node.ports["proxy_ssl"], None)
    assert "CN=localhost" in cert.subject.rfc4514_string()
    assert "O=Kong" in cert.subject.rfc4514_string()
    assert os.path.exists(os.path.join(kong_node.prefix, "ssl", "kong-default.crt"))
    assert os.path.exists(os.path.join(kong_node.prefix, "ssl", "kong-default.key"))


def test_proxied_over_https(kong_node: Node, upstream: Upstream) -> None:
    """A request over TLS is proxied with X-Forwarded-Proto: https."""
    path = "/" + uuid.uuid4().hex[:10]
    kong_node.add_api(request_path=path, upstream_url=upstream.url)
    r = http("GET", kong_node.proxy_ssl + path, context=client_context())
    assert r.status == 200
    assert ["X-Forwarded-Proto", "https"] in r.json()["headers"]


def test_tls12_accepted_tls11_refused(kong_node: Node) -> None:
    """TLS 1.2 and 1.3 handshakes succeed; TLS 1.1 is refused."""
    port = kong_node.ports["proxy_ssl"]
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context(version).wrap_socket(raw) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = client_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with old.wrap_socket(raw):
                pass


def test_sni_certificate_from_ssl_plugin(kong_node: Node, upstream: Upstream) -> None:
    """An API with the ssl plugin serves its own certificate to clients naming it in SNI."""
    host = f"sni-{uuid.uuid4().hex[:8]}.test"
    cert_pem, key_pem = generate_self_signed(host)
    api = kong_node.add_api(request_host=host, upstream_url=upstream.url)
    kong_node.add_plugin(api, "ssl", {"cert": cert_pem.decode(), "key": key_pem.decode()})
    # No request warmed anything: the proxy reads the ClientHello and loads the
    # API's plugins before the handshake, so even the first client gets the right cert.
    port = kong_node.ports["proxy_ssl"]
    served = peer_certificate(port, host)
    assert f"CN={host}" in served.subject.rfc4514_string()
    other = peer_certificate(port, "other.test")
    assert "CN=localhost" in other.subject.rfc4514_string()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context().wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(
                f"GET /over-sni HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["path"] == "/over-sni", data
