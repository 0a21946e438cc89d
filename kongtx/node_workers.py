# -*- test-case-name: tests.e2e.test_node_workers -*-
"""A node's proxy served by worker processes (``nginx_worker_processes`` >= 2).

The node (the master) binds the proxy sockets; the workers adopt them
(kongtx.workers.service).  What the node learns reaches the workers (its cache's
invalidations, health verdicts, DB-less configurations); what a worker writes
through its own DAO comes back to the node's cache at once and is published to
the cluster by the node's invalidation stream (kongtx.cluster.events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kongtx.config import Config
    from kongtx.node import KongNode


async def start_workers(node: KongNode) -> None:
    """Start the workers; start-up waits until every one accepts.

    With 1 the node serves the proxy itself, as always.
    """
    from kongtx.node import StartupError
    from kongtx.workers import ProxyWorkers, worker_count
    from kongtx.workers.stats import SummedMetrics

    count = worker_count(node.config.nginx_worker_processes)
    if count < 2:
        return
    assert node.balancers is not None
    workers = node.workers = ProxyWorkers(
        node.config,
        node.cache,
        node.clock,
        node.reactor,
        node.conf_path,
        count,
        health=node.balancers.health,
        stream=node.cluster.stream if node.cluster is not None else None,
    )
    node.listeners.skip = {"proxy", "proxy_ssl"}
    node.metrics = SummedMetrics(workers.stats)
    declarative = getattr(node.sites[0].resource, "declarative", None)
    if declarative is not None:
        declarative.replaced.append(workers.config_replaced)
    try:
        workers.setServiceParent(node)
    except OSError as e:
        raise StartupError(f"could not listen for the proxy workers: {e}") from e
    try:
        await workers.ready
    except Exception as e:
        raise StartupError(f"the proxy workers could not start: {e}") from e
    node.log.info("proxy served by {count} worker processes", count=count)


async def reload_workers(node: KongNode, old: Config, new: Config) -> list[str]:
    """A new worker generation (zero failed requests); returns the proxy roles that moved."""
    from kongtx.workers import worker_count

    assert node.workers is not None and node.workers.pool is not None
    count = worker_count(new.nginx_worker_processes)
    if count >= 2:
        node.workers.pool.count = count
    elif old.nginx_worker_processes != new.nginx_worker_processes:
        node.log.warn("reload: serving the proxy without worker processes applies on restart")
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
