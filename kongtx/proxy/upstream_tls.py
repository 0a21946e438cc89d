# -*- test-case-name: tests.unit.test_upstream_client -*-
"""How the upstream client (and the health probes) reach an upstream: endpoints and TLS.

An upstream named by host goes through ``HostnameEndpoint`` (the reactor's resolver,
off the reactor thread); a balanced peer is already an IP address, so it gets a plain
TCP endpoint and no name resolution at all.  HTTPS upstreams get SNI and no certificate
verification, as Kong 0.9 (nginx's ``proxy_ssl_verify off``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from zope.interface import implementer

from kongtx.proxy.connection import PoolKey


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedTLSCreator:
    """TLS to an upstream: SNI sent, certificate not verified (Kong 0.9 behaviour)."""

    def __init__(self, context: SSL.Context, hostname: str) -> None:
        self._context = context
        self._sni: bytes | None = None
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            self._sni = hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        if self._sni:
            conn.set_tlsext_host_name(self._sni)
        conn.set_connect_state()
        return conn


def client_tls_context() -> SSL.Context:
    """The client context for https upstreams and probes: no verification, as Kong 0.9."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    return ctx


def upstream_endpoint(
    reactor: Any, key: PoolKey, timeout: float, tls_context: SSL.Context
) -> IStreamClientEndpoint:
    """The endpoint of a pool key ``(scheme, host, port, name)``.

    ``name`` set: a balanced peer, ``host`` its IP (TLS still names the upstream).
    """
    scheme, host, port, name = key
    endpoint: IStreamClientEndpoint
    if name:
        if ":" in host:
            endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        else:
            endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        name = host
        endpoint = HostnameEndpoint(reactor, host.encode("ascii"), port, timeout=timeout)
    if scheme == "https":
        endpoint = wrapClientTLS(UnverifiedTLSCreator(tls_context, name), endpoint)
    return endpoint
