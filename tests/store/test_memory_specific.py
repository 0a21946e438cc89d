"""MemoryStore as other suites use it: synchronous, on a fake clock, with peers and outages."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock as FakeTime
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.store.interface import StoreUnavailable, UniqueViolation
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES
from tests.store.helpers import Rows


class MemoryStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.time = FakeTime()
        self.time.advance(1_700_000_000)
        self.store = MemoryStore(TABLES, "node-a", Clock(self.time))
        self.rows = Rows()

    def test_completes_synchronously(self) -> None:
        """Every call has its result before it returns: no reactor needed."""
        api = self.rows.api()
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.insert("apis", api))), api
        )
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.count("apis", {}))), 1
        )

    def test_ttl_follows_the_fake_clock(self) -> None:
        """A TTL row lives until the injected clock passes its expiry, to the second."""
        node = self.rows.node()
        self.successResultOf(Deferred.fromCoroutine(self.store.insert("nodes", node, ttl=30)))
        self.time.advance(29.9)
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.count("nodes", {}))), 1
        )
        self.time.advance(0.1)
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.count("nodes", {}))), 0
        )

    def test_events_stamped_with_clock_millis(self) -> None:
        """Events carry the fake clock's time in epoch milliseconds."""
        self.successResultOf(Deferred.fromCoroutine(self.store.insert("apis", self.rows.api())))
        (event,) = self.successResultOf(
            Deferred.fromCoroutine(self.store.events_after("node-a", 0, 10))
        )
        self.assertEqual(event.at, 1_700_000_000_000)

    def test_peer_shares_data_not_origin(self) -> None:
        """A peer sees the same rows and constraints but stamps events with its own origin."""
        peer = self.store.peer("node-b")
        api = self.successResultOf(Deferred.fromCoroutine(peer.insert("apis", self.rows.api())))
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.get("apis", {"id": api["id"]}))),
            api,
        )
        failure = self.failureResultOf(
            Deferred.fromCoroutine(self.store.insert("apis", self.rows.api(name=api["name"]))),
            UniqueViolation,
        )
        self.assertEqual(failure.value.field, "name")
        events = self.successResultOf(Deferred.fromCoroutine(self.store.events_since(0, 10)))
        self.assertEqual([(e.origin, e.seq) for e in events], [("node-b", 1)])

    def test_unavailable(self) -> None:
        """available = False makes every call fail with StoreUnavailable, until it is set back."""
        self.store.available = False
        self.failureResultOf(
            Deferred.fromCoroutine(self.store.select("apis", {})), StoreUnavailable
        )
        self.failureResultOf(Deferred.fromCoroutine(self.store.ping()), StoreUnavailable)
        self.store.available = True
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(self.store.ping())))

    def test_json_values_stored_as_json(self) -> None:
        """JSON columns come back as JSON would give them: tuples as lists, keys as strings."""
        plugin = self.rows.plugin(config={"a": (1, 2), 3: "x"})
        stored = self.successResultOf(Deferred.fromCoroutine(self.store.insert("plugins", plugin)))
        self.assertEqual(stored["config"], {"a": [1, 2], "3": "x"})
