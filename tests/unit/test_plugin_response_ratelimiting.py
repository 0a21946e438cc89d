"""response-ratelimiting at request time (SPEC §4.4)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.ratelimit_counters import period_starts
from kongtx.plugins.response_ratelimiting.handler import Handler, parse_costs
from tests.fakes import FakeContext
from tests.unit.test_plugin_rate_limiting import API, NOW, services


def settle(result: Any) -> None:
    if result is not None:
        assert ensureDeferred(result).called


class ResponseRateLimitingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.services, self.time, self.store = services()

    def handler(self, **config: Any) -> Handler:
        base = {"policy": "local", "limit_by": "ip", "header_name": "x-kong-limit"}
        return Handler({**base, **config}, self.services)

    def request(self, h: Handler, cost: str | None) -> FakeContext:
        ctx = FakeContext(api=API)
        settle(h.access(ctx))
        if ctx.responded:
            return ctx
        ctx.status = 200
        if cost is not None:
            ctx.response_headers.set("X-Kong-Limit", cost)
        settle(h.header_filter(ctx))
        settle(h.log(ctx))
        return ctx

    def test_parse_costs(self) -> None:
        """The upstream header is name=n pairs, comma separated; junk pieces are skipped."""
        self.assertEqual(
            parse_costs(["videos=2, images = 3", "junk, bad=x, =4", "audio=1"]),
            {"videos": 2, "images": 3, "audio": 1},
        )

    def test_headers_and_upstream_remaining(self) -> None:
        """Upstream gets X-RateLimit-Remaining-<name>; the client per-period headers, not the cost header."""
        h = self.handler(limits={"videos": {"minute": 5, "hour": 10}})
        ctx = self.request(h, "videos=2")
        self.assertEqual(ctx.headers.get("X-RateLimit-Remaining-videos"), "5")
        headers = dict(ctx.response_headers.items())
        self.assertEqual(
            headers,
            {
                "X-RateLimit-Limit-videos-minute": "5",
                "X-RateLimit-Remaining-videos-minute": "3",
                "X-RateLimit-Limit-videos-hour": "10",
                "X-RateLimit-Remaining-videos-hour": "8",
            },
        )
        ctx = self.request(h, None)
        self.assertEqual(ctx.headers.get("X-RateLimit-Remaining-videos"), "3")

    def test_cost_over_a_spent_limit_is_bodyless_429_and_not_counted(self) -> None:
        """A cost > 0 on a limit already at 0 turns the response into 429 with no body, uncounted."""
        h = self.handler(limits={"videos": {"minute": 2}})
        self.request(h, "videos=2")
        ctx = self.request(h, "videos=1")
        self.assertEqual(ctx.status, 429)
        self.assertEqual(ctx.response_headers.get("Content-Length"), "0")
        self.assertEqual(h.body_filter(ctx, b"upstream body", False), b"")
        self.assertIsNone(ctx.response_headers.get("x-kong-limit"))
        usage = h.counters.usage_now(  # type: ignore[attr-defined]
            API["id"], "127.0.0.1", period_starts(NOW), ["minute"], "videos"
        )
        self.assertEqual(usage, {"minute": 2})

    def test_zero_cost_still_passes_when_spent(self) -> None:
        """Without a cost for the spent name the response passes, remaining shown as 0."""
        h = self.handler(limits={"videos": {"minute": 1}, "images": {"minute": 5}})
        self.request(h, "videos=1")
        ctx = self.request(h, "images=1")
        self.assertEqual(ctx.status, 200)
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-videos-minute"), "0")
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-images-minute"), "4")

    def test_block_on_first_violation(self) -> None:
        """block_on_first_violation answers 429 with the limit's name in access once it is spent."""
        h = self.handler(limits={"videos": {"minute": 1}}, block_on_first_violation=True)
        self.request(h, "videos=1")
        ctx = self.request(h, None)
        self.assertEqual(
            ctx.response, (429, {"message": "API rate limit exceeded for 'videos'"}, {})
        )

    def test_unknown_names_are_ignored(self) -> None:
        """A cost for a name not configured adds no header and counts nothing."""
        h = self.handler(limits={"videos": {"minute": 3}})
        ctx = self.request(h, "other=5")
        self.assertNotIn("X-RateLimit-Limit-other-minute", dict(ctx.response_headers.items()))
        self.assertEqual(ctx.response_headers.get("X-RateLimit-Remaining-videos-minute"), "3")

    def test_cluster_policy_counts_named_periods(self) -> None:
        """The cluster policy stores <name>_<period> rows in response_ratelimiting_metrics."""
        h = self.handler(policy="cluster", limits={"videos": {"second": 9}})
        self.request(h, "videos=4")
        rows = self.successResultOf(
            ensureDeferred(self.store.select("response_ratelimiting_metrics", {}))
        )
        self.assertEqual(len(rows), 6)
        self.assertEqual({r["period"]: r["value"] for r in rows}["videos_second"], 4)

    def test_store_down(self) -> None:
        """Store errors: fault_tolerant proxies without headers, else 500."""
        self.store.available = False
        ctx = self.request(self.handler(policy="cluster", limits={"v": {"second": 1}}), "v=1")
        self.assertFalse(ctx.responded)
        self.assertIsNone(ctx.headers.get("X-RateLimit-Remaining-v"))
        h = self.handler(policy="cluster", fault_tolerant=False, limits={"v": {"second": 1}})
        ctx = self.request(h, "v=1")
        self.assertEqual(ctx.response, (500, {"message": "An unexpected error occurred"}, {}))
