# -*- test-case-name: tests.e2e.test_node_workers -*-
"""A node's proxy served by worker processes (``nginx_worker_processes`` >= 2).

The node (the master) binds the proxy sockets; the workers adopt them
(kongtx.workers.service).  What the node learns reaches the workers (its cache's
invalidations, health verdicts, DB-less configurations); what a worker writes
through its own DAO comes back to the node's cache at once and is published to
the cluster by the node's invalidation stream (kongtx.cluster.events).

``kong reload`` applies a changed count, 1 <-> N included, without failing a
request; the proxy sockets are never closed while the switch is made:

* 1 -> N: the workers adopt duplicates of the sockets the node's own proxy
  listeners hold; once every worker accepts, the node stops accepting on them
  (without shutting them down) and its in-flight requests drain;
* N -> 1: the node serves the proxy itself on the workers' sockets (its pipeline
  is built at start either way), then the workers drain and exit.

If the workers cannot start, the node keeps serving the proxy itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import DeferredList

from kongtx.listeners import maybe_await

if TYPE_CHECKING:
    import socket
    from collections.abc import Mapping

    from kongtx.config import Address, Config
    from kongtx.node import KongNode
    from kongtx.workers.service import ProxyWorkers

#: the listener roles the workers serve
PROXY_ROLES = {"proxy", "proxy_ssl"}


async def start_workers(node: KongNode) -> None:
    """Start the workers; start-up waits until every one accepts.

    With 1 the node serves the proxy itself, as always.
    """
    from kongtx.node import StartupError
    from kongtx.workers import worker_count

    _follow_declarative(node)
    count = worker_count(node.config.nginx_worker_processes)
    if count < 2:
        return
    node.listeners.skip = set(PROXY_ROLES)
    try:
        await _run_workers(node, node.config, count, {})
    except OSError as e:
        raise StartupError(f"could not listen for the proxy workers: {e}") from e
    except Exception as e:
        raise StartupError(f"the proxy workers could not start: {e}") from e
    node.log.info("proxy served by {count} worker processes", count=count)


async def reload_workers(node: KongNode, old: Config, new: Config) -> list[str]:
    """Apply ``nginx_worker_processes`` (the node's own listeners already applied ``new``).

    A new worker generation (zero failed requests), or the switch between the node
    serving the proxy itself and its workers serving it; returns the proxy roles
    that moved.
    """
    from kongtx.workers import worker_count

    count = worker_count(new.nginx_worker_processes)
    if node.workers is None:
        if count >= 2:
            await _to_workers(node, new, count)
        return []
    if count < 2:
        return await _to_node(node, new)
    assert node.workers.pool is not None
    node.workers.pool.count = count
    try:
        moved = await node.workers.reload(new)
    except Exception as e:
        node.log.error("reload: the new proxy workers did not start: {error}", error=e)
        return []
    node.log.info(
        "proxy workers reloaded (generation {generation})",
        generation=node.workers.pool.generation,
    )
    return moved


async def _run_workers(
    node: KongNode,
    config: Config,
    count: int,
    adopt: Mapping[str, tuple[Address, socket.socket]],
) -> ProxyWorkers:
    """``count`` workers as a service of the node, wired to it; fires once all accept.

    On failure they are stopped (the ``adopt`` sockets closed) and nothing stays wired.
    """
    from kongtx.workers import ProxyWorkers

    assert node.balancers is not None
    workers = ProxyWorkers(
        config,
        node.cache,
        node.clock,
        node.reactor,
        node.conf_path,
        count,
        health=node.balancers.health,
        stream=node.cluster.stream if node.cluster is not None else None,
        stats=node.worker_stats,
        adopt=adopt,
        document=node.dbless_document,
    )
    try:
        workers.setServiceParent(node)
        await workers.ready
    except Exception:
        workers.graceful = False
        if workers.parent is not None:
            await maybe_await(workers.disownServiceParent())
        else:
            await workers.stop(graceful=False)
        raise
    node.workers = workers
    return workers


async def _to_workers(node: KongNode, new: Config, count: int) -> None:
    """1 -> N: the workers adopt the node's proxy sockets, then the node's proxy drains."""
    held = node.listeners.sockets(PROXY_ROLES)
    adopt = {role: (address, _duplicate(sock)) for role, (address, sock) in held.items()}
    try:
        await _run_workers(node, new, count, adopt)
    except Exception as e:
        node.log.error(
            "reload: the proxy workers did not start ({error}); the node keeps serving the proxy",
            error=e,
        )
        return
    retired = await node.listeners.retire(PROXY_ROLES)
    node.log.info("proxy served by {count} worker processes", count=count)
    factories = [f for f in (getattr(s, "factory", None) for s in retired) if f is not None]
    node.draining_proxy.extend(factories)
    await DeferredList([f.drain(node.clock, 30.0) for f in factories])
    for factory in factories:
        # what this process's proxy counted stays in /status
        node.worker_stats.retire_server(factory.stats())
        node.draining_proxy.remove(factory)


async def _to_node(node: KongNode, new: Config) -> list[str]:
    """N -> 1: the node serves the workers' sockets itself, then the workers drain and exit.

    Returns the proxy roles that moved (a ``proxy_listen`` changed in the same reload
    moves once the node serves it).
    """
    workers = node.workers
    assert workers is not None
    try:
        await node.listeners.adopt(workers.sockets, new)
    except Exception as e:
        node.log.error(
            "reload: the node could not serve the proxy itself ({error}); keeping the workers",
            error=e,
        )
        return []
    node.workers = None
    node.log.info("proxy served by the node process; the worker processes drain")
    workers.graceful = True
    await maybe_await(workers.disownServiceParent())  # closes its sockets: ours are duplicates
    return await node.listeners.apply(new)


def _duplicate(sock: socket.socket) -> socket.socket:
    """Another descriptor of ``sock``'s listening socket, left non-blocking.

    Not ``sock.dup()``: it copies Python's idea of the timeout, which for a socket
    Twisted adopted is "blocking" and would clear ``O_NONBLOCK`` on the socket every
    descriptor shares (the node's next adopted port would then block in ``accept``).
    """
    import os
    import socket

    copy = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    copy.setblocking(False)
    return copy


def _follow_declarative(node: KongNode) -> None:
    """DB-less: the node remembers the posted configuration and hands it to its workers."""
    declarative = getattr(node.sites[0].resource, "declarative", None)
    if declarative is None:
        return

    def replaced(document: Mapping[str, Any]) -> None:
        node.dbless_document = document
        if node.workers is not None:
            node.workers.config_replaced(document)

    declarative.replaced.append(replaced)
