"""The invalidation stream: doorbells, echoes, gap detection, catch-up, pruning (in memory)."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.cluster.events import InvalidationStream, apply_kong_event
from kongtx.invalidation import ROUTER_KEY
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

T = TypeVar("T")


def api(n: int) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "name": f"api{n}",
        "request_host": None,
        "request_path": f"/p{n}",
        "strip_request_path": False,
        "preserve_host": False,
        "upstream_url": "http://x",
        "created_at": n,
    }


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1_000_000)
        self.clock = Clock(self.reactor)
        self.store_a = MemoryStore(TABLES, "node-a", self.clock)
        self.store_b = self.store_a.peer("node-b")
        self.sent: list[dict[str, Any]] = []
        self.cache_a, self.cache_b = Cache(self.clock), Cache(self.clock)
        self.a = InvalidationStream(
            "node-a",
            self.store_a,
            self.cache_a,
            self.clock,
            lambda p: self.sent.append(json.loads(p)),
        )
        self.b = InvalidationStream(
            "node-b", self.store_b, self.cache_b, self.clock, lambda p: None
        )
        self.do(self.a.start())
        self.do(self.b.start())

    def tearDown(self) -> None:
        self.clock.cancel_all()

    def do(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def write(self, n: int) -> None:
        self.do(self.store_a.insert("apis", api(n)))
        self.a.local_change()

    def deliver(self, payload: dict[str, Any]) -> None:
        self.do(self.b.on_event(json.dumps(payload).encode()))

    def test_local_write_rings_the_doorbell_with_kongs_payload(self) -> None:
        """One committed write sends Kong's {type, collection, primary_key, entity} plus origin, seq, keys."""
        self.write(1)
        (p,) = self.sent
        self.assertEqual(
            (p["type"], p["collection"], p["primary_key"], p["entity"]["id"]),
            ("ENTITY_CREATED", "apis", ["id"], api(1)["id"]),
        )
        self.assertEqual((p["origin"], p["seq"], p["prev"]), ("node-a", 1, 0))
        self.assertIn(ROUTER_KEY, p["keys"])

    def test_receiver_applies_keys_and_ignores_duplicates(self) -> None:
        """The doorbell's keys leave the receiver's cache; a repeat is ignored."""
        self.write(1)
        self.cache_b.set(ROUTER_KEY, "old")
        self.deliver(self.sent[0])
        self.assertNotIn(ROUTER_KEY, self.cache_b)
        self.cache_b.set(ROUTER_KEY, "new")
        self.deliver(self.sent[0])
        self.assertIn(ROUTER_KEY, self.cache_b)

    def test_own_echo_ignored(self) -> None:
        """A node receiving its own event (Serf gossips to the sender too) does nothing."""
        self.write(1)
        self.cache_a.set(ROUTER_KEY, "v")
        self.do(self.a.on_event(json.dumps(self.sent[0]).encode()))
        self.assertIn(ROUTER_KEY, self.cache_a)

    def test_gap_is_filled_from_the_log(self) -> None:
        """A lost doorbell is detected from ``prev`` and its row read from the log."""
        self.write(1)
        self.deliver(self.sent[0])
        self.write(2)
        self.write(3)
        self.cache_b.set("apis:" + api(2)["id"], "stale")
        self.deliver(self.sent[2])  # the doorbell for seq 2 was lost
        self.assertNotIn("apis:" + api(2)["id"], self.cache_b)
        self.assertEqual(self.b.gaps, 1)
        self.assertEqual(self.b.applied["node-a"], 3)

    def test_quiet_rows_are_not_a_gap(self) -> None:
        """``nodes`` keep-alive rows are not announced, and ``prev`` skips them without a log read."""
        self.write(1)
        self.deliver(self.sent[0])
        self.do(
            self.store_a.insert(
                "nodes",
                {"name": "node-a", "cluster_listening_address": "x", "created_at": 1},
                ttl=60,
            )
        )
        self.write(2)
        self.assertEqual([p["seq"] for p in self.sent], [1, 3])
        self.assertEqual(self.sent[1]["prev"], 1)
        self.deliver(self.sent[1])
        self.assertEqual(self.b.gaps, 0)

    def test_periodic_catch_up_applies_missed_changes(self) -> None:
        """With every doorbell lost, the catch-up tick still invalidates (within one interval)."""
        self.cache_b.set(ROUTER_KEY, "stale")
        self.write(1)
        self.reactor.advance(self.b.interval)
        self.assertNotIn(ROUTER_KEY, self.cache_b)
        self.assertEqual(self.b.applied["node-a"], 1)

    def test_first_news_from_an_unknown_origin_reads_the_window(self) -> None:
        """An origin first heard of at seq 2 has its seq 1 (written after we started) applied too."""
        self.write(1)
        self.write(2)
        self.cache_b.set("apis:" + api(1)["id"], "stale")
        self.deliver(self.sent[1])
        self.assertNotIn("apis:" + api(1)["id"], self.cache_b)

    def test_outage_longer_than_retention_flushes(self) -> None:
        """If the log could not be read for longer than the retention, the cache is flushed."""
        self.cache_b.set("anything", 1)
        self.store_b.available = False
        self.reactor.advance(self.b.retention + self.b.interval)
        self.store_b.available = True
        self.reactor.advance(self.b.interval)
        self.assertNotIn("anything", self.cache_b)

    def test_prune_removes_old_rows(self) -> None:
        """Rows older than the retention are deleted from the log."""
        self.write(1)
        self.reactor.advance(self.a.retention + 1)
        self.do(self.a.prune())
        self.assertEqual(self.do(self.store_a.events_after("node-a", 0, 10)), [])

    def worker_write(self, worker: MemoryStore, n: int) -> None:
        self.do(worker.insert("apis", api(n)))
        self.a.publish(worker.origin)

    def test_a_workers_rows_are_published_by_its_master(self) -> None:
        """A worker's write (its own origin) is announced by the master at once, with its
        own seq and prev chain; the master's own chain is untouched."""
        worker = self.store_a.peer("node-a-worker-7")
        self.write(1)
        self.worker_write(worker, 2)
        self.worker_write(worker, 3)
        self.write(4)
        chains = [(p["origin"], p["seq"], p["prev"]) for p in self.sent]
        self.assertEqual(
            chains,
            [
                ("node-a", 1, 0),
                ("node-a-worker-7", 1, 0),
                ("node-a-worker-7", 2, 1),
                ("node-a", 2, 1),
            ],
        )
        self.assertIn("apis:" + api(2)["id"], self.sent[1]["keys"])

    def test_a_receiver_applies_a_worker_origin_it_never_saw(self) -> None:
        """Node b hears of a's worker first at its seq 2: it reads the window and applies
        seq 1 too; the next doorbell of that origin is a plain one (no gap)."""
        worker = self.store_a.peer("node-a-worker-7")
        self.do(worker.insert("apis", api(1)))  # published late: its master missed it
        self.worker_write(worker, 2)
        self.cache_b.set("apis:" + api(1)["id"], "stale")
        self.cache_b.set("apis:" + api(2)["id"], "stale")
        self.deliver(self.sent[-1])
        self.assertNotIn("apis:" + api(1)["id"], self.cache_b)
        self.assertNotIn("apis:" + api(2)["id"], self.cache_b)
        self.assertEqual(self.b.applied["node-a-worker-7"], 2)
        self.worker_write(worker, 3)
        self.deliver(self.sent[-1])
        self.assertEqual((self.b.gaps, self.b.applied["node-a-worker-7"]), (0, 3))

    def test_an_origins_first_announcement_reads_only_its_own_rows(self) -> None:
        """``prev`` 0 (a worker's first doorbell): its earlier rows are read from its own
        log rows, not from the whole window of every origin."""
        worker = self.store_a.peer("node-a-worker-7")
        self.do(self.store_a.insert("apis", api(9)))  # node-a's, never announced
        self.do(worker.insert("nodes", {"name": "w", "cluster_listening_address": "x"}))
        self.worker_write(worker, 2)
        (p,) = self.sent
        self.assertEqual((p["seq"], p["prev"]), (2, 0))
        self.cache_b.set("apis:" + api(9)["id"], "untouched")
        self.deliver(p)
        self.assertEqual(self.b.applied["node-a-worker-7"], 2)
        self.assertIn("apis:" + api(9)["id"], self.cache_b)  # no window read
        self.assertEqual((self.b.gaps, self.b.caught_up), (0, 0))

    def test_the_masters_echo_of_a_workers_doorbell_is_ignored(self) -> None:
        """What the master published for its worker it has applied: its echo, and the
        catch-up tick, do not apply it again."""
        worker = self.store_a.peer("node-a-worker-7")
        self.worker_write(worker, 1)
        self.cache_a.set(ROUTER_KEY, "fresh")
        self.do(self.a.on_event(json.dumps(self.sent[0]).encode()))
        self.reactor.advance(self.a.interval)
        self.assertIn(ROUTER_KEY, self.cache_a)
        self.assertEqual(self.a.applied["node-a-worker-7"], 1)

    def test_a_retired_worker_origin_is_published_then_forgotten(self) -> None:
        """A worker that exited: its last rows (never announced) go out, then the master
        keeps no state for its origin; its own origin cannot be retired."""
        worker = self.store_a.peer("node-a-worker-7")
        self.worker_write(worker, 1)
        self.do(worker.insert("apis", api(2)))  # committed, then the worker died
        self.a.retire("node-a-worker-7")
        self.assertEqual([p["seq"] for p in self.sent], [1, 2])
        self.assertNotIn("node-a-worker-7", self.a.published)
        self.a.retire("node-a")
        self.assertIn("node-a", self.a.published)

    def test_origins_silent_longer_than_the_retention_are_forgotten(self) -> None:
        """Every restarted worker is a new origin: a receiver forgets those it has not
        heard of for longer than the retention (and their rows are pruned by then)."""
        worker = self.store_a.peer("node-a-worker-7")
        self.worker_write(worker, 1)
        self.deliver(self.sent[-1])
        self.write(2)
        self.assertIn("node-a-worker-7", self.b.applied)
        self.reactor.advance(self.b.retention + self.b.slack - 10)
        self.deliver(self.sent[-1])  # node-a itself spoke recently
        self.reactor.advance(20)
        self.do(self.b.prune())
        self.assertNotIn("node-a-worker-7", self.b.applied)
        self.assertIn("node-a", self.b.applied)

    def test_kong_payload_update_rereads_the_row(self) -> None:
        """A Kong-style update event clears the keys of the old entity and of the current row."""
        new = dict(api(1), request_host="new.example")
        self.do(self.store_a.insert("apis", new))
        self.cache_b.set("apis:new.example", "stale")

        async def find(collection: str, key: dict[str, Any]) -> Any:
            return await self.store_b.get(collection, key)

        payload = {
            "type": "entity_updated",
            "collection": "apis",
            "primary_key": ["id"],
            "entity": api(1),
        }
        keys = self.do(apply_kong_event(self.cache_b, find, payload))
        self.assertIn("apis:new.example", keys)
        self.assertNotIn("apis:new.example", self.cache_b)

    def test_malformed_kong_events_invalidate_nothing(self) -> None:
        """Non-JSON, unknown types and member events are ignored."""
        self.cache_b.set(ROUTER_KEY, 1)
        self.do(self.b.on_event(b"not json"))
        self.do(self.b.on_event(json.dumps({"type": "MEMBER-JOIN", "entity": "x"}).encode()))
        self.do(
            self.b.on_event(json.dumps({"type": "ENTITY_CREATED", "collection": "apis"}).encode())
        )
        self.assertIn(ROUTER_KEY, self.cache_b)
