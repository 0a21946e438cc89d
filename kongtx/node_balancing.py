# -*- test-case-name: tests.e2e.test_node -*-
"""A node's load balancing wiring: balancers, health checks, health shared with the cluster.

One health table, resolver and set of balancers per node (kongtx.balancer), built
with the DAO; active and passive checks run in this process (a master's workers
run passive checks only, kongtx.workers); every node applies the others' verdicts
(``kongtx-health`` events, kongtx.cluster.health_gossip).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kongtx.node import KongNode


def start_balancing(node: KongNode) -> None:
    """One health table, resolver and set of balancers per node; health checks on."""
    from kongtx.balancer.health import HealthChecks
    from kongtx.balancer.registry import make_balancers

    assert node.dao is not None
    node.balancers = make_balancers(node.config, node.cache, node.dao, node.clock, node.reactor)
    node.health_checks = HealthChecks(
        node.balancers.health,
        node.balancers,
        node.dao,
        node.clock,
        node.reactor,
        reconcile_interval=node.config.db_update_frequency,
    )
    node.dao.add_listener(node.health_checks.on_change)
    node.health_checks.start()


def share_health(node: KongNode) -> None:
    """Every node applies the health verdicts of the others (``kongtx-health`` events).

    Called before the cluster agent joins: the join replays recent events, health included.
    """
    from kongtx.cluster.health_gossip import EVENT_NAME, HealthGossip

    cluster, balancers = node.cluster, node.balancers
    assert cluster is not None and balancers is not None
    node.health_gossip = HealthGossip(
        balancers.health, node.node_name, cluster.serf.user_event, node.clock
    )
    cluster.user_event_handlers[EVENT_NAME] = node.health_gossip.on_event
    node.health_gossip.start()
