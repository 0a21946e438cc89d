"""The ``nodes`` table bookkeeping (SPEC §6.2) on the in-memory store and task.Clock."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.cluster.nodes import AUTOJOIN_INTERVAL, AUTOJOIN_RETRIES, KEEPALIVE, NodeRegistry
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

T = TypeVar("T")


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1000)
        self.clock = Clock(self.reactor)
        self.store = MemoryStore(TABLES, "me", self.clock)
        self.joins: list[str] = []
        self.refuse: set[str] = set()
        self.live = 1

        async def join(address: str) -> None:
            self.joins.append(address)
            if address in self.refuse:
                raise ConnectionRefusedError(address)

        self.registry = NodeRegistry(
            self.store, self.clock, "me", "10.0.0.1:7946", 60, join, lambda: self.live
        )

    def tearDown(self) -> None:
        self.clock.cancel_all()

    def do(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def row(self, name: str, address: str, created_at: int, ttl: int = 600) -> None:
        self.do(
            self.store.insert(
                "nodes",
                {"name": name, "cluster_listening_address": address, "created_at": created_at},
                ttl=ttl,
            )
        )

    def names(self) -> set[str]:
        return {r["name"] for r in self.do(self.store.select("nodes", {}))}

    def test_start_replaces_leftover_joins_newest_first_and_registers(self) -> None:
        """Our crash leftover is replaced; rows are tried newest first until one answers."""
        self.row("me", "10.0.0.1:1", 1)
        self.row("old", "10.0.0.2:7946", 2)
        self.row("new", "10.0.0.3:7946", 3)
        self.refuse.add("10.0.0.3:7946")
        self.do(self.registry.start())
        self.assertEqual(self.joins, ["10.0.0.3:7946", "10.0.0.2:7946"])
        mine = self.do(self.store.get("nodes", {"name": "me"}))
        self.assertEqual(mine["cluster_listening_address"], "10.0.0.1:7946")

    def test_row_expires_without_keepalive_and_keepalive_renews(self) -> None:
        """The row lives ttl seconds; the 30 s keep-alive keeps it (and re-creates it if gone)."""
        self.do(self.registry.start())
        self.reactor.advance(KEEPALIVE * 4)
        self.assertIn("me", self.names())
        self.clock.cancel_all()
        self.reactor.advance(61)
        self.assertNotIn("me", self.names())
        self.do(self.registry.keepalive())
        self.assertIn("me", self.names())

    def test_autojoin_retries_while_alone_then_gives_up(self) -> None:
        """Seeing other rows but no live peer, it re-joins every 3 s, at most 20 times."""
        self.do(self.registry.start())
        self.row("late", "10.0.0.9:7946", 5)
        self.reactor.advance(AUTOJOIN_INTERVAL)
        self.assertEqual(self.joins, ["10.0.0.9:7946"])
        self.live = 2
        self.reactor.advance(AUTOJOIN_INTERVAL)
        self.assertEqual(len(self.joins), 1)
        self.live = 1
        for _ in range(AUTOJOIN_RETRIES + 5):
            self.reactor.advance(AUTOJOIN_INTERVAL)
        self.assertEqual(len(self.joins), AUTOJOIN_RETRIES - 1)

    def test_stop_deletes_the_row(self) -> None:
        """A clean stop removes our row so new nodes stop trying us."""
        self.do(self.registry.start())
        self.do(self.registry.stop())
        self.assertNotIn("me", self.names())
