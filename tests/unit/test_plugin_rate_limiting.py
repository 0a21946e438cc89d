"""rate-limiting at request time, its counter policies and the Redis client (SPEC §4.4)."""

from __future__ import annotations

import calendar
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock as FakeTime
from twisted.trial.unittest import SynchronousTestCase

from kongtx.clock import Clock
from kongtx.plugins.base import PluginServices
from kongtx.plugins.rate_limiting.handler import Handler
from kongtx.plugins.ratelimit_counters import period_starts
from kongtx.plugins.ratelimit_local import LocalCounters, local_counters
from kongtx.plugins.ratelimit_policies import (
    ClusterCounters,
    RedisCounters,
    counters_for,
    identifier_for,
)
from kongtx.plugins.redis_client import (
    RedisError,
    RedisPool,
    RedisProtocol,
    RedisUnavailable,
    encode_command,
    parse_reply,
)
from kongtx.store.memory import MemoryStore
from kongtx.store.rows import freeze
from kongtx.store.tables import TABLES
from tests.fakes import FakeContext

API = {"id": "a1b2c3d4-0000-4000-8000-00000000000a", "name": "api"}
# 2016-11-28 19:27:43.250 UTC
NOW = calendar.timegm((2016, 11, 28, 19, 27, 43, 0, 0, 0)) + 0.25


class FakeDao:
    def __init__(self, store: Any) -> None:
        self.store = store


def services(now: float = NOW) -> tuple[PluginServices, FakeTime, MemoryStore]:
    fake = FakeTime()
    fake.advance(now)
    clock = Clock(fake)
    store = MemoryStore(TABLES, "node-a", clock)
    return PluginServices(dao=FakeDao(store), cache=None, clock=clock, reactor=fake), fake, store


def run_access(h: Handler, ctx: FakeContext) -> None:
    result = h.access(ctx)
    if result is not None:
        d = ensureDeferred(result)  # type: ignore[arg-type]
        assert d.called, "the access phase waited on something a unit test cannot give"
    h.header_filter(ctx)


class PeriodTests(SynchronousTestCase):
    def test_period_starts_are_utc_calendar_windows(self) -> None:
        """Each period's window starts at its UTC calendar boundary, in ms."""
        starts = period_starts(NOW)
        g = calendar.timegm
        self.assertEqual(
            starts,
            {
                "second": g((2016, 11, 28, 19, 27, 43, 0, 0, 0)) * 1000,
                "minute": g((2016, 11, 28, 19, 27, 0, 0, 0, 0)) * 1000,
                "hour": g((2016, 11, 28, 19, 0, 0, 0, 0, 0)) * 1000,
                "day": g((2016, 11, 28, 0, 0, 0, 0, 0, 0)) * 1000,
                "month": g((2016, 11, 1, 0, 0, 0, 0, 0, 0)) * 1000,
                "year": g((2016, 1, 1, 0, 0, 0, 0, 0, 0)) * 1000,
            },
        )

    def test_identifier_order(self) -> None:
        """consumer id, then credential's consumer/credential id, then the client IP."""
        ctx = FakeContext(client_ip="10.1.2.3")
        self.assertEqual(identifier_for("consumer", ctx), "10.1.2.3")
        ctx.credential = {"id": "cred-1", "consumer_id": None}
        self.assertEqual(identifier_for("consumer", ctx), "cred-1")
        self.assertEqual(identifier_for("credential", ctx), "cred-1")
        ctx.credential = {"id": "cred-1", "consumer_id": "cons-9"}
        self.assertEqual(identifier_for("consumer", ctx), "cons-9")
        ctx.consumer = {"id": "cons-1"}
        self.assertEqual(identifier_for("consumer", ctx), "cons-1")
        self.assertEqual(identifier_for("credential", ctx), "cred-1")
        self.assertEqual(identifier_for("ip", ctx), "10.1.2.3")


class LocalPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.services, self.time, _ = services()

    def handler(self, **config: Any) -> Handler:
        return Handler({"policy": "local", "limit_by": "ip", **config}, self.services)

    def test_headers_count_down_then_429(self) -> None:
        """Every configured period gets Limit/Remaining headers; the 3rd request over minute=2 is 429."""
        h = self.handler(minute=2, hour=10)
        seen = []
        for _ in range(3):
            ctx = FakeContext(api=API)
            run_access(h, ctx)
            seen.append((ctx.response, ctx.response_headers.items()))
        self.assertIsNone(seen[0][0])
        self.assertEqual(
            dict(seen[0][1]),
            {
                "X-RateLimit-Limit-minute": "2",
                "X-RateLimit-Remaining-minute": "1",
                "X-RateLimit-Limit-hour": "10",
                "X-RateLimit-Remaining-hour": "9",
            },
        )
        self.assertEqual(dict(seen[1][1])["X-RateLimit-Remaining-minute"], "0")
        self.assertEqual(dict(seen[1][1])["X-RateLimit-Remaining-hour"], "8")
        status, body, headers = seen[2][0]  # type: ignore[misc]
        self.assertEqual((status, body), (429, {"message": "API rate limit exceeded"}))
        # on a rejection the period not exceeded shows limit - usage (no -1)
        self.assertEqual(headers["X-RateLimit-Remaining-minute"], "0")
        self.assertEqual(headers["X-RateLimit-Remaining-hour"], "8")

    def test_window_rolls_over(self) -> None:
        """A new second starts a new window: the second limit allows requests again."""
        h = self.handler(second=1)
        ctx = FakeContext(api=API)
        run_access(h, ctx)
        ctx = FakeContext(api=API)
        run_access(h, ctx)
        self.assertEqual(ctx.status, 429)
        self.time.advance(1)
        ctx = FakeContext(api=API)
        run_access(h, ctx)
        self.assertIsNone(ctx.response)

    def test_identifiers_are_counted_apart(self) -> None:
        """Two client IPs each get their own quota."""
        h = self.handler(minute=1)
        for ip in ("10.0.0.1", "10.0.0.2"):
            ctx = FakeContext(api=API, client_ip=ip)
            run_access(h, ctx)
            self.assertIsNone(ctx.response)

    def test_local_counters_are_node_wide_and_expire(self) -> None:
        """A rebuilt handler (new config) sees the same counters; expired ones are swept."""
        self.handler(minute=5).access(FakeContext(api=API))
        counters = local_counters(self.services.clock)
        self.assertIsInstance(counters, LocalCounters)
        self.assertEqual(len(counters), 6)
        h2 = self.handler(minute=5, hour=50)
        ctx = FakeContext(api=API)
        run_access(h2, ctx)
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-minute"), "3")
        self.time.advance(31536000 + 5)
        counters.increment_now("x", "y", period_starts(self.time.seconds()), 1)
        self.assertEqual(len(counters), 6)

    def test_fractional_limit_printed_as_kong_did(self) -> None:
        """A limit that is not a whole number prints as Lua did (2.5), and so does what is left."""
        h = self.handler(minute=2.5, hour=10)
        ctx = FakeContext(api=API)
        run_access(h, ctx)
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Limit-minute"), "2.5")
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-minute"), "1.5")
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-hour"), "9")

    def test_consumers_counted_apart_across_seconds(self) -> None:
        """limit_by consumer: each consumer has its own counters (their keys found once a
        second per client), and a new second's keys still count in the same minute."""
        h = self.handler(limit_by="consumer", minute=2)
        remaining = []
        for consumer_id, advance in (("c-1", 0), ("c-2", 0), ("c-1", 1), ("c-1", 1)):
            self.time.advance(advance)
            ctx = FakeContext(api=API)
            ctx.consumer = {"id": consumer_id}
            run_access(h, ctx)
            remaining.append(
                ctx.status
                if ctx.response
                else ctx.response_headers.get("X-RateLimit-Remaining-minute")
            )
        self.assertEqual(remaining, ["1", "1", "0", 429])

    def test_same_consumer_row_counted_without_lookup(self) -> None:
        """Immutable consumer and API rows: a consumer's next request to the same API
        reuses its counters' keys (kept for the second), other consumers and a new
        second look theirs up; every count is exact."""
        h = self.handler(limit_by="consumer", minute=5)
        api = freeze(dict(API))
        one, two = freeze({"id": "c-1", "username": "a"}), freeze({"id": "c-2", "username": "b"})
        remaining = []
        for consumer, advance in ((one, 0), (one, 0), (two, 0), (one, 0), (one, 1), (two, 0)):
            self.time.advance(advance)
            ctx = FakeContext(api=api)
            ctx.consumer = consumer
            run_access(h, ctx)
            remaining.append(ctx.response_headers.get("X-RateLimit-Remaining-minute"))
        self.assertEqual(remaining, ["4", "3", "4", "2", "1", "3"])
        self.assertIs(h._window.last_consumer, two)  # type: ignore[union-attr]
        self.assertIs(h._window.last_api, api)  # type: ignore[union-attr]
        ctx = FakeContext(api=freeze({**API, "name": "renamed"}))  # a changed API row
        ctx.consumer = two
        run_access(h, ctx)
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-minute"), "2")

    def test_local_access_is_synchronous(self) -> None:
        """The local policy's access phase returns None (no Deferred on the hot path)."""
        self.assertIsNone(self.handler(second=5).access(FakeContext(api=API)))


class ClusterPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.services, self.time, self.store = services()

    def handler(self, **config: Any) -> Handler:
        return Handler({"policy": "cluster", "limit_by": "consumer", **config}, self.services)

    def test_counts_in_the_datastore_per_consumer(self) -> None:
        """The cluster policy counts all six periods in ratelimiting_metrics, per consumer id."""
        h = self.handler(second=3)
        ctx = FakeContext(api=API)
        ctx.consumer = {"id": "cons-1"}
        run_access(h, ctx)
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-second"), "2")
        starts = period_starts(NOW)
        rows = self.successResultOf(ensureDeferred(self.store.select("ratelimiting_metrics", {})))
        self.assertEqual(len(rows), 6)
        row = {r["period"]: r for r in rows}["second"]
        self.assertEqual(
            row,
            {
                "api_id": API["id"],
                "identifier": "cons-1",
                "period_date": starts["second"],
                "period": "second",
                "value": 1,
            },
        )

    def test_fault_tolerant_proxies_without_headers(self) -> None:
        """With the store down and fault_tolerant, the request goes through with no headers."""
        self.store.available = False
        ctx = FakeContext(api=API)
        run_access(self.handler(second=1, fault_tolerant=True), ctx)
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.response_headers.items(), [])

    def test_not_fault_tolerant_is_500(self) -> None:
        """With the store down and fault_tolerant false, the client gets a 500."""
        self.store.available = False
        ctx = FakeContext(api=API)
        run_access(self.handler(second=1, fault_tolerant=False), ctx)
        self.assertEqual(ctx.response, (500, {"message": "An unexpected error occurred"}, {}))

    def test_counters_for_picks_the_policy(self) -> None:
        """policy names the counter store: local, cluster (the store) or redis (a pool)."""
        self.assertIsInstance(counters_for({"policy": "local"}, self.services, "t"), LocalCounters)
        cluster = counters_for({"policy": "cluster"}, self.services, "ratelimiting_metrics")
        self.assertIsInstance(cluster, ClusterCounters)
        redis = counters_for(
            {"policy": "redis", "redis_host": "r", "redis_port": 7000, "redis_timeout": 500},
            self.services,
            "t",
        )
        assert isinstance(redis, RedisCounters)
        self.assertEqual((redis.pool.host, redis.pool.port, redis.timeout), ("r", 7000, 0.5))


class FakePool:
    """Records pipelined commands and answers from a script."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.batches: list[list[tuple[Any, ...]]] = []

    def execute(self, commands: list[tuple[Any, ...]], timeout: float) -> Deferred[list[Any]]:
        self.batches.append(list(commands))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            return fail(reply)
        return succeed(reply)


class RedisPolicyTests(SynchronousTestCase):
    def test_usage_is_one_mget_of_kongs_keys(self) -> None:
        """usage reads every period in one MGET of ratelimit:<api>:<id>:<start>:<period>."""
        pool = FakePool([[[b"4", None]]])
        counters = RedisCounters(pool, 2.0)  # type: ignore[arg-type]
        starts = period_starts(NOW)
        got = self.successResultOf(
            ensureDeferred(counters.usage("api", "id", starts, ["second", "minute"]))
        )
        self.assertEqual(got, {"second": 4, "minute": 0})
        self.assertEqual(
            pool.batches,
            [
                [
                    (
                        "MGET",
                        f"ratelimit:api:id:{starts['second']}:second",
                        f"ratelimit:api:id:{starts['minute']}:minute",
                    )
                ]
            ],
        )

    def test_increment_sets_expiry_on_new_keys_only(self) -> None:
        """INCRBY every period; EXPIRE (period length) only keys this increment created."""
        pool = FakePool([[1, 5, 1, 9, 9, 9], ["OK", "OK"]])
        counters = RedisCounters(pool, 2.0)  # type: ignore[arg-type]
        starts = period_starts(NOW)
        self.successResultOf(ensureDeferred(counters.increment("api", "id", starts, 1, "videos")))
        incr, expire = pool.batches
        self.assertEqual(len(incr), 6)
        self.assertEqual(
            incr[0], ("INCRBY", f"response-ratelimit:api:id:{starts['second']}:videos:second", 1)
        )
        self.assertEqual(
            expire,
            [
                ("EXPIRE", f"response-ratelimit:api:id:{starts['second']}:videos:second", 1),
                ("EXPIRE", f"response-ratelimit:api:id:{starts['hour']}:videos:hour", 3600),
            ],
        )

    def test_redis_down_is_fault_tolerant(self) -> None:
        """A Redis error with fault_tolerant proxies without headers; without it, 500."""
        svc, _, _ = services()
        for tolerant, expected in ((True, None), (False, 500)):
            h = Handler(
                {"policy": "redis", "redis_host": "h", "second": 1, "fault_tolerant": tolerant}, svc
            )
            h.counters = RedisCounters(FakePool([RedisUnavailable("down")]), 1.0)  # type: ignore[arg-type]
            ctx = FakeContext(api=API)
            run_access(h, ctx)
            self.assertEqual(ctx.response[0] if ctx.response else None, expected)


class RespTests(SynchronousTestCase):
    def test_encode_command(self) -> None:
        """Commands are RESP arrays of bulk strings."""
        self.assertEqual(
            encode_command("INCRBY", "k", 5), b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n5\r\n"
        )

    def test_parse_every_reply_type(self) -> None:
        """Simple, error, integer, bulk, null and nested array replies parse; partial ones wait."""
        self.assertEqual(parse_reply(b"+OK\r\n"), ("OK", 5))
        err, _ = parse_reply(b"-ERR wrong\r\n")  # type: ignore[misc]
        self.assertIsInstance(err, RedisError)
        self.assertEqual(parse_reply(b":42\r\n"), (42, 5))
        self.assertEqual(parse_reply(b"$3\r\nabc\r\n"), (b"abc", 9))
        self.assertEqual(parse_reply(b"$-1\r\n"), (None, 5))
        self.assertEqual(parse_reply(b"*2\r\n$1\r\n7\r\n$-1\r\n"), ([b"7", None], 16))
        self.assertIsNone(parse_reply(b"$3\r\nab"))
        self.assertIsNone(parse_reply(b"*2\r\n:1\r\n"))

    def test_protocol_matches_replies_in_order(self) -> None:
        """Pipelined replies arriving in pieces fire their Deferreds in order; a loss fails the rest."""
        from twisted.internet.testing import StringTransport

        proto = RedisProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        d1, d2, d3 = proto.send([("GET", "a"), ("INCRBY", "b", 1), ("GET", "c")])
        self.assertEqual(
            transport.value(),
            encode_command("GET", "a")
            + encode_command("INCRBY", "b", 1)
            + encode_command("GET", "c"),
        )
        proto.dataReceived(b"$1\r\nx\r\n:")
        self.assertEqual(self.successResultOf(d1), b"x")
        self.assertNoResult(d2)
        proto.dataReceived(b"3\r\n")
        self.assertEqual(self.successResultOf(d2), 3)
        proto.connectionLost()
        self.failureResultOf(d3, RedisUnavailable)

    def test_pool_times_out(self) -> None:
        """A batch that gets no answer within the timeout fails with RedisUnavailable."""
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        pool = RedisPool(reactor, Clock(reactor), "127.0.0.1", 6379, None)
        d = ensureDeferred(pool.execute([("GET", "k")], 0.5))
        self.assertNoResult(d)
        reactor.advance(0.6)
        self.failureResultOf(d, RedisUnavailable)


class SlowCounters:
    """Counters whose increments wait for the test to release them."""

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []

    async def usage(self, *args: Any, **kw: Any) -> dict[str, int]:
        return {"second": 0}

    async def increment(self, *args: Any, **kw: Any) -> None:
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        await d


class IncrementOrderTests(SynchronousTestCase):
    def test_access_waits_for_the_increment(self) -> None:
        """With a shared policy the request goes upstream only once its count is written (accuracy bound)."""
        svc, _, _ = services()
        h = Handler({"policy": "cluster", "second": 5}, svc)
        slow = SlowCounters()
        h.counters = slow  # type: ignore[assignment]
        d = ensureDeferred(h.access(FakeContext(api=API)))  # type: ignore[arg-type]
        self.assertNoResult(d)
        self.assertEqual(len(slow.pending), 1)
        slow.pending[0].callback(None)
        self.successResultOf(d)

    def test_failed_increment_still_proxies(self) -> None:
        """An increment that fails after a good read is logged; the request still goes through."""
        svc, _, _ = services()
        h = Handler({"policy": "cluster", "second": 5}, svc)
        slow = SlowCounters()
        h.counters = slow  # type: ignore[assignment]
        ctx = FakeContext(api=API)
        d = ensureDeferred(h.access(ctx))  # type: ignore[arg-type]
        slow.pending[0].errback(RedisUnavailable("gone"))
        self.successResultOf(d)
        self.assertFalse(ctx.responded)
        self.flushLoggedErrors()

    def test_cancellation_is_not_a_store_error(self) -> None:
        """A request cancelled during the usage read (client gone) is cancelled, not failed open or 500."""
        from twisted.internet.defer import CancelledError

        svc, _, _ = services()
        h = Handler({"policy": "cluster", "second": 5, "fault_tolerant": False}, svc)
        waiting: Deferred[dict[str, int]] = Deferred()

        class Hanging(SlowCounters):
            async def usage(self, *args: Any, **kw: Any) -> dict[str, int]:
                return await waiting

        h.counters = Hanging()  # type: ignore[assignment]
        ctx = FakeContext(api=API)
        d = ensureDeferred(h.access(ctx))  # type: ignore[arg-type]
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertFalse(ctx.responded)
