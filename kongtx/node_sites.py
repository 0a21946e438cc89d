# -*- test-case-name: tests.e2e.test_node -*-
"""What a node's listeners serve: the Admin site, the proxy, proxy_ssl and the status site.

Built once at start (:func:`build_sites`: the Admin API's site and the proxy's
pipeline, kept across reloads); a reload only moves sockets (kongtx.listeners),
asking :func:`listener_service` for the service of a role on its new address or
on a socket already listening (a proxy socket handed over by the node's workers).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import IService

from kongtx.admin.resource import AdminResource
from kongtx.config import Address, Config
from kongtx.http.site import TrackingSite
from kongtx.listeners import Adopting
from kongtx.node_view import NodeView

if TYPE_CHECKING:
    from kongtx.node import KongNode


def endpoint(address: Address) -> str:
    """A strports description for a listen address (IPv6 hosts escaped)."""
    host = address.host.replace(":", "\\:")
    return f"tcp:port={address.port}:interface={host}"


def build_sites(node: KongNode) -> None:
    """The Admin API's site and the proxy's pipeline, built once: reloads only move sockets."""
    from kongtx.proxy.service import build_pipeline

    assert node.dao is not None and node.registry is not None
    admin = AdminResource(
        node.dao, node.cache, node.config, node.registry, NodeView(node), node.clock
    )
    site = TrackingSite(admin)
    site.displayTracebacks = False
    node.sites = [site]
    node.pipeline, node.routers, node.plugin_runtime = build_pipeline(
        node.config,
        node.dao,
        node.cache,
        node.registry,
        node.clock,
        node.reactor,
        node.balancers,
    )


def listener_service(
    node: KongNode, role: str, config: Config, sock: socket.socket | None = None
) -> IService:
    """A role's listening service for ``config`` (kongtx.listeners).

    ``sock``: a proxy role's socket, already listening, to serve instead of binding.
    """
    from kongtx.proxy import service as proxy

    assert node.pipeline is not None
    reactor = node.reactor if sock is None else Adopting(node.reactor, sock)
    if role == "admin":
        return strports.service(endpoint(config.admin_listen), node.sites[0], reactor=node.reactor)
    if role == "proxy":
        return proxy.proxy_service(config, node.pipeline, node.clock, reactor)
    if role == "proxy_ssl":
        assert node.routers is not None and node.plugin_runtime is not None
        if node.proxy_tls is None:
            node.proxy_tls = proxy.make_tls_context(config, node.routers, node.plugin_runtime)
        warmer = proxy.sni_warmer(node.routers, node.plugin_runtime)
        return proxy.proxy_ssl_service(
            config, node.pipeline, node.proxy_tls, warmer, node.clock, reactor
        )
    assert role == "status" and config.status_listen is not None
    return status_service(node, config.status_listen)


def status_service(node: KongNode, address: Address) -> IService:
    """``status_listen``: Prometheus ``/metrics`` (kongtx.status), fed by the proxy pipeline."""
    from kongtx.status import NodeProbes, StatusResource

    assert node.store is not None and node.pipeline is not None
    observe: Any = node.metrics.observe  # reads the ProxyContext fields it knows
    if observe not in node.pipeline.observers:
        node.pipeline.observers.append(observe)
    checks = node.health_checks
    probes = NodeProbes(
        node.store,
        node.clock,
        lambda: node.cluster,
        target_health=checks.states if checks is not None else None,
    )
    site = TrackingSite(StatusResource(node.metrics, probes))
    site.displayTracebacks = False
    return strports.service(endpoint(address), site, reactor=node.reactor)
