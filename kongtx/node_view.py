# -*- test-case-name: tests.e2e.test_node -*-
"""NodeView: a node as the Admin API sees it (``kongtx.admin.resource.NodeInfo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kongtx.balancer.health import HealthChecks
    from kongtx.node import KongNode


class NodeView:
    """The node as the Admin API sees it (``kongtx.admin.resource.NodeInfo``).

    Membership, join and force-leave are the cluster layer's (kongtx.cluster);
    before it has started the cluster is this node alone.
    """

    def __init__(self, node: KongNode) -> None:
        self._node = node

    @property
    def name(self) -> str:
        return self._node.node_name

    @property
    def hostname(self) -> str:
        return self._node.hostname

    async def members(self) -> list[dict[str, Any]]:
        cluster = self._node.cluster
        if cluster is not None:
            return cluster.members()
        config = self._node.config
        address = config.cluster_advertise or config.cluster_listen
        return [{"name": self.name, "address": f"{address.host}:{address.port}", "status": "alive"}]

    async def join(self, address: str) -> None:
        cluster = self._node.cluster
        if cluster is None:
            raise ValueError(f"Error joining {address}: the cluster agent is not running")
        await cluster.join(address)

    async def force_leave(self, name: str) -> None:
        cluster = self._node.cluster
        if cluster is None:
            raise ValueError(f"Error force-leaving {name}: the cluster agent is not running")
        await cluster.force_leave(name)

    def server_stats(self) -> dict[str, int]:
        return self._node.server_stats()

    @property
    def health_checks(self) -> HealthChecks | None:
        return self._node.health_checks
