# -*- test-case-name: tests.unit.test_balancer_health -*-
"""Target health through the Admin API (Kong 1.x's, issue 9).

* ``POST /upstreams/{u}/targets/{t}/healthy`` and ``.../unhealthy`` (204): set
  every resolved address of the target (``{t}`` is its ``host:port`` or id) with
  ``source="manual"``; the cluster layer shares it with every node.
* ``GET /upstreams/{u}/health``: every target row plus ``health``:
  ``HEALTHY`` (at least one of its addresses is), ``UNHEALTHY``,
  ``HEALTHCHECKS_OFF`` (no active nor passive checks configured, nothing set by
  hand nor received from the cluster) or ``DNS_ERROR`` (no address), with this
  node's name as ``node_id``: health is per node in Kong, shared here, but each
  node still answers for itself.

These routes stay writable in DB-less mode, as Kong's: they change no entity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, route
from kongtx.admin.routes.upstreams import find_target, find_upstream

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource
    from kongtx.balancer.health import HealthChecks


def _checks(admin: AdminResource) -> HealthChecks:
    checks: HealthChecks | None = getattr(admin.node, "health_checks", None)
    if checks is None:
        raise HTTPError(404, NOT_FOUND)
    return checks


def routes(admin: AdminResource) -> list[Route]:
    """Health of an upstream's targets: set by hand, and listed."""

    async def set_health(call: Call, healthy: bool) -> Reply:
        checks = _checks(admin)
        upstream = await find_upstream(admin, call.args["upstream"])
        target = await find_target(admin, upstream, call.args["target"])
        await checks.set_target(upstream, str(target["target"]), healthy)
        return Reply(204)

    async def healthy(call: Call) -> Reply:
        return await set_health(call, True)

    async def unhealthy(call: Call) -> Reply:
        return await set_health(call, False)

    async def health(call: Call) -> Reply:
        checks = _checks(admin)
        upstream = await find_upstream(admin, call.args["upstream"])
        rows = await checks.report(upstream, await checks.targets_of(upstream))
        return Reply(200, {"data": rows, "total": len(rows), "node_id": admin.node.name})

    return [
        route("/upstreams/{upstream}/targets/{target}/healthy", ("POST",), POST=healthy),
        route("/upstreams/{upstream}/targets/{target}/unhealthy", ("POST",), POST=unhealthy),
        route("/upstreams/{upstream}/health", GET=health),
    ]
