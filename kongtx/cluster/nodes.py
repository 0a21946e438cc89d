# -*- test-case-name: tests.unit.test_cluster_nodes -*-
"""The ``nodes`` table bookkeeping of SPEC §6.2 (register, keep alive, auto-join).

Why a table at all when gossip knows the members: a node that starts must find
*someone* to join, and the shared datastore is the one thing every node already
reaches.  As in Kong 0.9: on start a node deletes its own leftover row, joins the
members it finds (newest first, until one answers), then registers itself with a
TTL of ``cluster_ttl_on_failure`` seconds refreshed every 30 s, so a crashed node's
row disappears on its own.  Nodes that start at the same moment find each other
later: every 3 s (at most 20 times) a node that sees other rows but no other live
member tries to join again.  On stop the row is deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kongtx import log
from kongtx.clock import Clock
from kongtx.store.interface import IStore

KEEPALIVE = 30.0
AUTOJOIN_INTERVAL = 3.0
AUTOJOIN_RETRIES = 20


class NodeRegistry:
    """This node's row in ``nodes`` and the joins it drives."""

    log = log.logger()

    def __init__(
        self,
        store: IStore,
        clock: Clock,
        name: str,
        address: str,
        ttl: int,
        join: Callable[[str], Awaitable[Any]],
        live_members: Callable[[], int],
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.address = address
        self.ttl = ttl
        self._join = join
        self._live_members = live_members
        self._retries = 0
        self._autojoin: Any = None

    async def start(self) -> None:
        """Delete our crash leftover, join the known nodes, register, start the timers."""
        await self.store.delete("nodes", {"name": self.name})
        await self.auto_join()
        await self.register()
        self.clock.looping_call(KEEPALIVE, self.keepalive)
        self._autojoin = self.clock.looping_call(AUTOJOIN_INTERVAL, self._retry_join)

    async def others(self) -> list[dict[str, Any]]:
        """Rows of the other nodes, newest first."""
        rows = await self.store.select("nodes", {})
        rows = [r for r in rows if r["name"] != self.name]
        rows.sort(key=lambda r: r.get("created_at") or 0, reverse=True)
        return rows

    async def auto_join(self) -> bool:
        """Join the first node row that answers; False when none did (or none exist)."""
        for row in await self.others():
            address = row.get("cluster_listening_address")
            if not address:
                continue
            try:
                await self._join(address)
            except Exception as e:
                self.log.warn(
                    "could not join cluster at {address}: {error}", address=address, error=e
                )
                continue
            self.log.info("joined the cluster at {address}", address=address)
            return True
        return False

    async def register(self) -> None:
        """Write our row with the TTL (insert, or update when it is still there)."""
        values = {"cluster_listening_address": self.address}
        updated = await self.store.update("nodes", {"name": self.name}, values, ttl=self.ttl)
        if updated is None:
            row = {"name": self.name, **values, "created_at": self.clock.millis()}
            await self.store.insert("nodes", row, ttl=self.ttl)

    async def keepalive(self) -> None:
        """Refresh our row's TTL (re-insert it if it expired meanwhile)."""
        await self.register()

    async def _retry_join(self) -> None:
        self._retries += 1
        if self._retries > AUTOJOIN_RETRIES:
            if self._autojoin is not None and self._autojoin.running:
                self._autojoin.stop()
            return
        if self._live_members() < 2 and await self.others():
            await self.auto_join()

    async def stop(self) -> None:
        """Delete our row (a clean stop; a crash leaves it to expire)."""
        await self.store.delete("nodes", {"name": self.name})
