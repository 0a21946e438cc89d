# -*- test-case-name: tests.unit.test_proxy_service -*-
"""The proxy listeners of a node: ``proxy_listen`` and ``proxy_listen_ssl``.

``kongtx.node`` calls :func:`make_proxy_services` once the store is ready and adds
the returned services to its tree; everything the proxy needs at request time
(router, plugin chains, upstream pool) is built here, once per node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from kongtx.balancer.registry import Balancers, make_balancers
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.plugins.runtime import PluginRuntime
from kongtx.proxy.context import RouterSource
from kongtx.proxy.fast import FastProxyFactory
from kongtx.proxy.pipeline import ProxyPipeline
from kongtx.proxy.request import TrustedIps
from kongtx.proxy.tls import (
    CertificateHook,
    ProxyTLSContextFactory,
    SNIWarmer,
    SNIWarmingTLSEndpoint,
    ensure_default_certificate,
)
from kongtx.proxy.upstream import make_upstream_client

if TYPE_CHECKING:  # a worker never imports twisted.application (issue 8: its memory)
    from twisted.application.service import IService

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
        # twisted.web's server only where it serves: a fast worker never imports it
        from kongtx.proxy.http import ProxySite
        from kongtx.proxy.resource import ProxyResource

        return ProxySite(
            ProxyResource(pipeline),
            max_header_size=max_header,
            clock=clock,
            stream_threshold=STREAM_THRESHOLD,
        )
    return FastProxyFactory(
        pipeline, max_header_size=max_header, stream_threshold=STREAM_THRESHOLD, clock=clock
    )


def default_certificate(config: Any) -> tuple[str, str]:
    """``ssl_cert``/``ssl_cert_key``, or the node's generated default pair."""
    if config.ssl_cert and config.ssl_cert_key:
        return config.ssl_cert, config.ssl_cert_key
    return ensure_default_certificate(config.prefix)


def make_tls_context(
    config: Any, routers: RouterSource, runtime: PluginRuntime
) -> ProxyTLSContextFactory:
    """The server TLS context of ``proxy_listen_ssl``, with the ssl plugin's SNI hook."""
    cert, key = default_certificate(config)
    return ProxyTLSContextFactory(cert, key, certificate_hook(routers, runtime))


def proxy_service(config: Any, pipeline: ProxyPipeline, clock: Clock, reactor: Any) -> IService:
    """The ``proxy_listen`` listener (not started)."""
    from twisted.application.internet import StreamServerEndpointService

    listen = config.proxy_listen
    return StreamServerEndpointService(
        _tcp_endpoint(reactor, listen.host, listen.port),
        make_proxy_factory(config, pipeline, clock),
    )


def proxy_ssl_service(
    config: Any,
    pipeline: ProxyPipeline,
    tls: ProxyTLSContextFactory,
    warmer: SNIWarmer,
    clock: Clock,
    reactor: Any,
) -> IService:
    """The ``proxy_listen_ssl`` listener (not started)."""
    from twisted.application.internet import StreamServerEndpointService

    listen_ssl = config.proxy_listen_ssl
    endpoint = SNIWarmingTLSEndpoint(
        _tcp_endpoint(reactor, listen_ssl.host, listen_ssl.port), tls, warmer, clock
    )
    return StreamServerEndpointService(endpoint, make_proxy_factory(config, pipeline, clock))


def apply_proxy_settings(pipeline: ProxyPipeline, factories: list[Any], config: Any) -> None:
    """A reloaded configuration's proxy settings, on live listeners (``kong reload``).

    ``trusted_ips``, the ``upstream_*`` timeouts and keep-alive pool size and
    ``client_max_header_size`` need no new socket: they apply to the next request
    (the pool's cached endpoints are dropped so new connects use the new timeout).
    """
    pipeline.trusted_ips = TrustedIps(config.trusted_ips)
    client = pipeline.client
    client.keepalive = int(config.upstream_keepalive)
    client.connect_timeout = int(config.upstream_connect_timeout) / 1000.0
    client.send_timeout = int(config.upstream_send_timeout) / 1000.0
    client.read_timeout = int(config.upstream_read_timeout) / 1000.0
    client._endpoints.clear()
    for factory in factories:
        factory.max_header_size = int(config.client_max_header_size)


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
    services = [proxy_service(config, pipeline, clock, reactor)]
    if config.ssl:
        tls = make_tls_context(config, routers, runtime)
        warmer = sni_warmer(routers, runtime)
        services.append(proxy_ssl_service(config, pipeline, tls, warmer, clock, reactor))
    return services
