# -*- test-case-name: tests.unit.test_admin_root -*-
"""``GET /``, ``GET /status`` and ``/robots.txt`` (SPEC §1.1, §1.5)."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from kongtx import __version__
from kongtx.admin.routes.base import Call, Reply, Route, route

if TYPE_CHECKING:
    from kongtx.admin.resource import AdminResource

#: Collections that are bookkeeping, not entities: /status does not count them.
_NOT_COUNTED = frozenset({"cluster_events", "schema_migrations"})


def routes(admin: AdminResource) -> list[Route]:
    """The node-level routes."""

    async def index(call: Call) -> Reply:
        plugin_rows = await admin.dao.find_all("plugins", {})
        return Reply(
            200,
            {
                "tagline": "Welcome to kong",
                "version": __version__,
                "hostname": admin.node.hostname,
                # One reactor thread: when this handler runs, no other timer callback
                # is running; "pending" is everything the node's clock has scheduled.
                "timers": {"running": 0, "pending": admin.clock.pending},
                "plugins": {
                    "available_on_server": {name: True for name in admin.registry.names()},
                    "enabled_in_cluster": sorted({row["name"] for row in plugin_rows}),
                },
                # Kong reported its LuaJIT; kongtx runs on Python and says so.
                "lua_version": f"Python {platform.python_version()}",
                "configuration": admin.config.to_dict(mask_secrets=True),
                # kongtx draws every random value (ids, keys, secrets) from the OS
                # CSPRNG, so no process has a PRNG seed to report.
                "prng_seeds": {},
            },
        )

    async def status(call: Call) -> Reply:
        database = {}
        for collection in admin.dao.schemas:
            if collection not in _NOT_COUNTED:
                database[collection] = await admin.dao.count(collection, {})
        return Reply(200, {"server": admin.node.server_stats(), "database": database})

    async def robots(call: Call) -> Reply:
        return Reply(
            200, raw=b"User-agent: *\nDisallow: /", headers={b"Content-Type": b"text/plain"}
        )

    return [
        route("/", GET=index),
        route("/status", GET=status),
        route("/robots.txt", GET=robots),
    ]
