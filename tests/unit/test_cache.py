"""The node cache: LRU bound, TTL, negative entries, collapsed and invalidation-safe loads."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cache import Cache, estimate_size
from kongtx.clock import Clock


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.cache = Cache(Clock(self.reactor), max_bytes=10_000)

    def load(self, key: str, loader: Any, **kw: Any) -> Deferred[Any]:
        return ensureDeferred(self.cache.get_or_load(key, loader, **kw))

    def test_peek_miss_then_hit(self) -> None:
        """peek reports a miss for an unknown key and the value once set."""
        self.assertEqual(self.cache.peek("a"), (False, None))
        self.cache.set("a", {"id": 1})
        self.assertEqual(self.cache.peek("a"), (True, {"id": 1}))

    def test_negative_entry_is_a_hit_with_none(self) -> None:
        """A loader returning None is cached as a negative entry: a hit whose value is None."""
        calls: list[int] = []

        async def loader() -> None:
            calls.append(1)
            return None

        self.assertIsNone(self.successResultOf(self.load("k", loader)))
        self.assertEqual(self.cache.peek("k"), (True, None))
        self.assertIsNone(self.successResultOf(self.load("k", loader)))
        self.assertEqual(len(calls), 1)

    def test_negative_false_does_not_store_misses(self) -> None:
        """With negative=False a miss is loaded again next time."""
        calls: list[int] = []

        async def loader() -> None:
            calls.append(1)

        self.successResultOf(self.load("k", loader, negative=False))
        self.successResultOf(self.load("k", loader, negative=False))
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.cache.peek("k"), (False, None))

    def test_ttl_expires_on_the_injected_clock(self) -> None:
        """An entry set with a TTL disappears once the clock passes it."""
        self.cache.set("t", "v", ttl=5)
        self.reactor.advance(4.9)
        self.assertEqual(self.cache.peek("t"), (True, "v"))
        self.reactor.advance(0.2)
        self.assertEqual(self.cache.peek("t"), (False, None))
        self.assertEqual(len(self.cache), 0)

    def test_concurrent_misses_collapse_into_one_load(self) -> None:
        """Three callers missing one key share one load and all get its value."""
        pending: Deferred[str] = Deferred()
        calls: list[int] = []

        def loader() -> Deferred[str]:
            calls.append(1)
            return pending

        ds = [self.load("k", loader) for _ in range(3)]
        for d in ds:
            self.assertNoResult(d)
        pending.callback("value")
        self.assertEqual([self.successResultOf(d) for d in ds], ["value"] * 3)
        self.assertEqual(calls, [1])
        self.assertEqual(self.cache.peek("k"), (True, "value"))

    def test_cancelling_one_waiter_does_not_cancel_the_load(self) -> None:
        """A waiter that gives up is cancelled alone; the others still get the value."""
        pending: Deferred[str] = Deferred()
        first = self.load("k", lambda: pending)
        second = self.load("k", lambda: pending)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        pending.callback("v")
        self.assertEqual(self.successResultOf(second), "v")

    def test_invalidation_during_load_prevents_stale_store(self) -> None:
        """A load that started before an invalidation returns its value but never stores it."""
        pending: Deferred[str] = Deferred()
        d = self.load("k", lambda: pending)
        self.cache.invalidate("k")
        pending.callback("stale")
        self.assertEqual(self.successResultOf(d), "stale")
        self.assertEqual(self.cache.peek("k"), (False, None))

    def test_flush_during_load_prevents_stale_store(self) -> None:
        """flush() also forgets loads in flight."""
        pending: Deferred[str] = Deferred()
        d = self.load("k", lambda: pending)
        self.cache.flush()
        pending.callback("stale")
        self.successResultOf(d)
        self.assertEqual(len(self.cache), 0)

    def test_new_load_after_invalidation_stores_fresh_value(self) -> None:
        """After an invalidation, a new load runs and its (fresh) value is stored."""
        old: Deferred[str] = Deferred()
        new: Deferred[str] = Deferred()
        d1 = self.load("k", lambda: old)
        self.cache.invalidate("k")
        d2 = self.load("k", lambda: new)
        new.callback("fresh")
        old.callback("stale")
        self.assertEqual(self.successResultOf(d1), "stale")
        self.assertEqual(self.successResultOf(d2), "fresh")
        self.assertEqual(self.cache.peek("k"), (True, "fresh"))

    def test_loader_failure_reaches_every_waiter_and_stores_nothing(self) -> None:
        """A failing load errbacks every waiter; the next call loads again."""
        pending: Deferred[str] = Deferred()
        d1 = self.load("k", lambda: pending)
        d2 = self.load("k", lambda: pending)
        pending.errback(ValueError("db down"))
        self.failureResultOf(d1, ValueError)
        self.failureResultOf(d2, ValueError)
        self.assertEqual(self.cache.peek("k"), (False, None))

    def test_lru_eviction_keeps_size_bounded(self) -> None:
        """Past max_bytes the least recently used entries go first."""
        for i in range(200):
            self.cache.set(f"key{i}", "x" * 100)
            if i > 0:
                self.cache.peek("key0")  # keep key0 hot
        self.assertLessEqual(self.cache.size, self.cache.max_bytes)
        self.assertTrue(self.cache.peek("key0")[0])
        self.assertFalse(self.cache.peek("key1")[0])
        self.assertTrue(self.cache.peek("key199")[0])
        self.assertGreater(self.cache.evictions, 0)

    def test_invalidate_prefix(self) -> None:
        """invalidate_prefix drops exactly the keys with that prefix."""
        self.cache.set("plugins_chain:a", 1)
        self.cache.set("plugins_chain:b", 2)
        self.cache.set("plugins:key-auth", 3)
        self.cache.invalidate_prefix("plugins_chain:")
        self.assertEqual(self.cache.keys(), ["plugins:key-auth"])

    def test_size_estimate_grows_with_content(self) -> None:
        """The estimate orders values by how much they hold and honours cache_size."""

        class Big:
            cache_size = 5_000_000

        self.assertLess(estimate_size({"a": "b"}), estimate_size({"a": "b" * 1000}))
        self.assertEqual(estimate_size(Big()), 5_000_000)


class Recorder:
    """An invalidation listener noting what it is told, and what the cache held by then."""

    def __init__(self, cache: Cache, fail: bool = False) -> None:
        self.cache = cache
        self.fail = fail
        self.told: list[tuple[str, str, int]] = []

    def note(self, what: str, arg: str) -> None:
        self.told.append((what, arg, len(self.cache)))
        if self.fail:
            raise RuntimeError("listener broke")

    def invalidate(self, key: str) -> None:
        self.note("invalidate", key)

    def invalidate_prefix(self, prefix: str) -> None:
        self.note("invalidate_prefix", prefix)

    def flush(self) -> None:
        self.note("flush", "")


class InvalidationListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cache = Cache(Clock(task.Clock()))
        for key in ("apis:1", "apis:2", "plugins:a", "plugins:b"):
            self.cache.set(key, {"id": key})

    def test_listeners_are_told_after_the_cache_did_its_own_work(self) -> None:
        """invalidate, invalidate_prefix and flush reach every listener, the entries already gone."""
        first, second = Recorder(self.cache), Recorder(self.cache)
        self.cache.add_invalidation_listener(first)
        self.cache.add_invalidation_listener(second)
        self.cache.invalidate("apis:1")
        self.cache.invalidate("unknown")  # told too: a worker may hold what the master does not
        self.cache.invalidate_prefix("plugins:")
        self.cache.flush()
        expected = [
            ("invalidate", "apis:1", 3),
            ("invalidate", "unknown", 3),
            ("invalidate_prefix", "plugins:", 1),
            ("flush", "", 0),
        ]
        self.assertEqual(first.told, expected)
        self.assertEqual(second.told, expected)

    def test_a_removed_listener_is_told_nothing_more(self) -> None:
        """After removal (twice is harmless) the cache invalidates only itself again."""
        recorder = Recorder(self.cache)
        self.cache.add_invalidation_listener(recorder)
        self.cache.invalidate("apis:1")
        self.cache.remove_invalidation_listener(recorder)
        self.cache.remove_invalidation_listener(recorder)
        self.cache.invalidate("apis:2")
        self.cache.flush()
        self.assertEqual(recorder.told, [("invalidate", "apis:1", 3)])
        self.assertEqual(len(self.cache), 0)

    def test_a_failing_listener_is_logged_and_the_others_still_told(self) -> None:
        """A listener's error neither reaches the caller nor keeps the next listener uninformed."""
        broken, fine = Recorder(self.cache, fail=True), Recorder(self.cache)
        self.cache.add_invalidation_listener(broken)
        self.cache.add_invalidation_listener(fine)
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.cache.invalidate("apis:1")
        self.cache.invalidate_prefix("plugins:")
        self.cache.flush()
        self.assertEqual([t[0] for t in fine.told], ["invalidate", "invalidate_prefix", "flush"])
        self.assertEqual(len(broken.told), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(
            [(e["what"], e["arg"], e["listener"]) for e in failures],
            [
                ("invalidate", "apis:1", broken),
                ("invalidate_prefix", "plugins:", broken),
                ("flush", "", broken),
            ],
        )
