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

from typing import TYPE_CHECKING, Any

from kongtx.admin.routes.base import NOT_FOUND, Call, HTTPError, Reply, Route, is_uuid, route

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource
    from kongtx.balancer.health import HealthChecks


def _checks(admin: AdminResource) -> HealthChecks:
    checks: HealthChecks | None = getattr(admin.node, "health_checks", None)
    if checks is None:
        raise HTTPError(404, NOT_FOUND)
    return checks


async def find_upstream(admin: AdminResource, key: str) -> dict[str, Any]:
    """The upstream named ``key`` or with id ``key``; 404 otherwise."""
    if is_uuid(key):
        row = await admin.dao.find("upstreams", {"id": key.lower()})
        if row is not None:
            return dict(row)
    rows = await admin.dao.find_all("upstreams", {"name": key})
    if not rows:
        raise HTTPError(404, NOT_FOUND)
    return dict(rows[0])


async def targets_of(admin: AdminResource, upstream: dict[str, Any]) -> list[dict[str, Any]]:
    """The upstream's target rows, oldest first (Kong's order)."""
    rows = await admin.dao.find_all("targets", {"upstream_id": upstream["id"]})
    return sorted((dict(r) for r in rows), key=lambda r: (r.get("created_at") or 0, r["id"]))


def find_target(targets: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The target with id ``key``, or whose ``target`` is ``key`` (port 8000 when omitted)."""
    wanted = {key, key.lower()}  # the DAO stores hosts lower-case, "host" as "host:8000"
    if not is_uuid(key) and (key.endswith("]") or ":" not in key):
        wanted.add(f"{key.lower()}:8000")
    for row in targets:
        if row["id"] in wanted or row["target"] in wanted:
            return row
    raise HTTPError(404, NOT_FOUND)


def routes(admin: AdminResource) -> list[Route]:
    """Health of an upstream's targets: set by hand, and listed."""

    async def set_health(call: Call, healthy: bool) -> Reply:
        checks = _checks(admin)
        upstream = await find_upstream(admin, call.args["upstream"])
        target = find_target(await targets_of(admin, upstream), call.args["target"])
        await checks.set_target(upstream, str(target["target"]), healthy)
        return Reply(204)

    async def healthy(call: Call) -> Reply:
        return await set_health(call, True)

    async def unhealthy(call: Call) -> Reply:
        return await set_health(call, False)

    async def health(call: Call) -> Reply:
        checks = _checks(admin)
        upstream = await find_upstream(admin, call.args["upstream"])
        rows = await checks.report(upstream, await targets_of(admin, upstream))
        return Reply(200, {"data": rows, "total": len(rows), "node_id": admin.node.name})

    return [
        route("/upstreams/{upstream}/targets/{target}/healthy", ("POST",), POST=healthy),
        route("/upstreams/{upstream}/targets/{target}/unhealthy", ("POST",), POST=unhealthy),
        route("/upstreams/{upstream}/health", GET=health),
    ]
