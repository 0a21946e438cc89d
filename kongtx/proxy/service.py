# -*- test-case-name: tests.unit.test_proxy_service -*-
"""The proxy listeners of a node: ``proxy_listen`` and ``proxy_listen_ssl``.

``kongtx.node`` calls :func:`make_proxy_services` once the store is ready and adds
the returned services to its tree; everything the proxy needs at request time
(router, plugin chains, upstream pool) is built here, once per node.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from kongtx.balancer.registry import Balancers, make_balancers
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.plugins.runtime import PluginRuntime
from kongtx.proxy.fast import FastProxyFactory
from kongtx.proxy.http import ProxySite
from kongtx.proxy.pipeline import ProxyPipeline, RouterSource
from kongtx.proxy.request import TrustedIps
from kongtx.proxy.resource import ProxyResource
from kongtx.proxy.tls import (
    CertificateHook,
    ProxyTLSContextFactory,
    SNIWarmer,
    SNIWarmingTLSEndpoint,
    ensure_default_certificate,
)
from kongtx.proxy.upstream import make_upstream_client

log = logger("kongtx.proxy")

#: Request bodies larger than this (and chunked ones) stream to the upstream as they
#: arrive; smaller ones are read whole first, so they can be replayed when a pooled
#: upstream connection turns out to be closed.
STREAM_THRESHOLD = 1024 * 1024


def certificate_hook(routers: RouterSource, runtime: PluginRuntime) -> CertificateHook:
    """SNI -> the certificate the API's plugins chose (SPEC §3.6), synchronously.

    Kong looked up the API whose request_host *equals* the SNI name (no
    wildcards).  The handshake cannot wait, so only what is cached counts; a miss
    starts loading the router or the API's plugin chain for the next handshake and
    serves the default certificate now.
    """

    def hook(sni: str) -> tuple[bytes, bytes] | None:
        router = routers.peek()
        if router is None:
            Deferred.fromCoroutine(routers.get()).addErrback(
                lambda f: log.failure("loading the router failed", f)
            )
            return None
        found = router.match_host(sni)
        if found is None or found[1] != "host-exact":
            return None
        api = found[0]
        chain = runtime.cached_chain(api)
        if chain is None:
            Deferred.fromCoroutine(runtime.chain_for(api)).addErrback(
                lambda f: log.failure("loading plugins for {sni} failed", f, sni=sni)
            )
            return None
        return chain.certificate(sni)

    return hook


def sni_warmer(routers: RouterSource, runtime: PluginRuntime) -> SNIWarmer:
    """Before a handshake: load what :func:`certificate_hook` needs for ``sni`` if cold.

    ``None`` (go ahead now) when the router and the API's chain are cached or the
    name is no API's exact request_host; else a Deferred that fires once loaded.
    """

    def warm(sni: str) -> Deferred[object] | None:
        router = routers.peek()
        if router is not None:
            found = router.match_host(sni)
            if found is None or found[1] != "host-exact":
                return None
            if runtime.cached_chain(found[0]) is not None:
                return None

        async def load() -> object:
            loaded = await routers.get()
            hit = loaded.match_host(sni)
            if hit is not None and hit[1] == "host-exact":
                await runtime.chain_for(hit[0])
            return None

        return Deferred.fromCoroutine(load())

    return warm


def build_pipeline(
    config: Any,
    dao: Any,
    cache: Any,
    registry: Any,
    clock: Clock,
    reactor: Any,
    balancers: Balancers | None = None,
) -> tuple[ProxyPipeline, RouterSource, PluginRuntime]:
    """The node's proxy pipeline, its router source and its plugin runtime.

    ``balancers``: the node's upstream balancers (shared with its health checks);
    built here, with a health table of their own, when not given.
    """
    routers = RouterSource(cache, dao)
    runtime = PluginRuntime(dao, cache, registry, clock)
    if balancers is None:
        balancers = make_balancers(config, cache, dao, clock, reactor)
    pipeline = ProxyPipeline(
        routers,
        make_upstream_client(reactor, clock, config),
        clock,
        trusted_ips=TrustedIps(config.trusted_ips),
        plugins=runtime,
        balancers=balancers,
    )
    return pipeline, routers, runtime


def _tcp_endpoint(reactor: Any, host: str, port: int) -> Any:
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, interface=host)
    return TCP4ServerEndpoint(reactor, port, interface=host)


def make_proxy_factory(config: Any, pipeline: ProxyPipeline, clock: Clock) -> Any:
    """One listener's protocol factory for ``proxy_frontend`` (``fast`` or ``web``).

    Both count connections and requests (``stats()``) and drain (``drain()``).
    """
    max_header = int(config.client_max_header_size)
    if getattr(config, "proxy_frontend", "fast") == "web":
        return ProxySite(
            ProxyResource(pipeline),
            max_header_size=max_header,
            clock=clock,
            stream_threshold=STREAM_THRESHOLD,
        )
    return FastProxyFactory(
        pipeline, max_header_size=max_header, stream_threshold=STREAM_THRESHOLD, clock=clock
    )


def make_proxy_services(
    config: Any,
    dao: Any,
    cache: Any,
    registry: Any,
    clock: Clock,
    reactor: Any,
    balancers: Balancers | None = None,
) -> list[IService]:
    """Listening services for ``proxy_listen`` and (when ``ssl`` is on) ``proxy_listen_ssl``."""
    pipeline, routers, runtime = build_pipeline(
        config, dao, cache, registry, clock, reactor, balancers
    )
    services: list[IService] = []

    listen = config.proxy_listen
    services.append(
        StreamServerEndpointService(
            _tcp_endpoint(reactor, listen.host, listen.port),
            make_proxy_factory(config, pipeline, clock),
        )
    )

    if config.ssl:
        if config.ssl_cert and config.ssl_cert_key:
            cert, key = config.ssl_cert, config.ssl_cert_key
        else:
            cert, key = ensure_default_certificate(config.prefix)
        tls = ProxyTLSContextFactory(cert, key, certificate_hook(routers, runtime))
        listen_ssl = config.proxy_listen_ssl
        endpoint = SNIWarmingTLSEndpoint(
            _tcp_endpoint(reactor, listen_ssl.host, listen_ssl.port),
            tls,
            sni_warmer(routers, runtime),
            clock,
        )
        services.append(
            StreamServerEndpointService(endpoint, make_proxy_factory(config, pipeline, clock))
        )
    return services
