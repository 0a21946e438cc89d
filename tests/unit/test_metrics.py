"""Prometheus metrics: in-place counters, fixed-bucket histograms, the exposition and /metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock as FakeReactorTime
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from kongtx.clock import Clock
from kongtx.config_loading import _build
from kongtx.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS_MS,
    Family,
    Histogram,
    Metrics,
    Sample,
    escape_label,
    format_value,
    render_families,
)
from kongtx.status import NodeProbes, StatusResource
from kongtx.store.interface import StoreUnavailable
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

NOW = 1_800_000_000.0


@dataclass
class Ctx:
    """The slice of ProxyContext the metrics read."""

    api: dict[str, Any] = field(default_factory=lambda: {"id": "a1", "name": "users"})
    status: int = 200
    proxy_latency: int | None = 3
    upstream_latency: int | None = 12
    request_latency: int | None = 16
    request_size: int = 100
    response_size: int = 2000


def parse(text: str) -> dict[str, Any]:
    """Family name -> family, through prometheus_client's own parser."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample (name + sorted labels) -> value, for every sample called ``name``."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


class HistogramTests(SynchronousTestCase):
    def test_value_lands_in_first_bucket_at_or_above_it(self) -> None:
        """A value equal to a bound counts in that bound's bucket (``le`` is inclusive)."""
        h = Histogram((1, 5, 10))
        for v in (0, 1, 2, 5, 10, 11):
            h.observe(v)
        self.assertEqual(h.counts, [2, 2, 1, 1])
        self.assertEqual(h.count, 6)
        self.assertEqual(h.total, 29)

    def test_cumulative_ends_with_inf(self) -> None:
        """The scrape view is cumulative and its +Inf bucket equals the count."""
        h = Histogram((1, 5))
        for v in (1, 3, 7, 9):
            h.observe(v)
        self.assertEqual(h.cumulative(), [("1", 1), ("5", 2), ("+Inf", 4)])

    def test_bounds_must_increase(self) -> None:
        """Unsorted or repeated bounds are refused at construction."""
        self.assertRaises(ValueError, Histogram, (5, 1))
        self.assertRaises(ValueError, Histogram, (1, 1))

    def test_kong_buckets(self) -> None:
        """The default bounds are the Kong Prometheus plugin's, from 1 ms to 60 s."""
        self.assertEqual(LATENCY_BUCKETS_MS[0], 1)
        self.assertEqual(LATENCY_BUCKETS_MS[-1], 60000)
        self.assertEqual(len(LATENCY_BUCKETS_MS), 26)


class ObserveTests(SynchronousTestCase):
    def test_counts_by_api_and_status(self) -> None:
        """Requests are counted per API name and status code."""
        m = Metrics()
        m.observe(Ctx())
        m.observe(Ctx())
        m.observe(Ctx(status=404))
        m.observe(Ctx(api={"id": "b2", "name": "orders"}))
        self.assertEqual(m.apis["users"].codes, {200: 2, 404: 1})
        self.assertEqual(m.apis["orders"].codes, {200: 1})

    def test_status_zero_is_not_counted(self) -> None:
        """A request abandoned before any status was chosen leaves no trace."""
        m = Metrics()
        m.observe(Ctx(status=0))
        self.assertEqual(m.apis, {})

    def test_api_without_name_is_labelled_by_id(self) -> None:
        """An API with no name is labelled by its id."""
        m = Metrics()
        m.observe(Ctx(api={"id": "a1", "name": None}))
        self.assertEqual(list(m.apis), ["a1"])

    def test_latencies_and_bandwidth(self) -> None:
        """Each latency type goes to its histogram; sizes add up as ingress and egress."""
        m = Metrics()
        m.observe(Ctx())
        m.observe(Ctx(request_size=5, response_size=7))
        stats = m.apis["users"]
        self.assertEqual(stats.latency["kong"].total, 6)
        self.assertEqual(stats.latency["upstream"].total, 24)
        self.assertEqual(stats.latency["request"].total, 32)
        self.assertEqual((stats.ingress, stats.egress), (105, 2007))

    def test_plugin_answer_counts_whole_request_as_kong(self) -> None:
        """When no upstream was called, kong latency is the request's and upstream is unset."""
        m = Metrics()
        m.observe(Ctx(status=401, proxy_latency=None, upstream_latency=None, request_latency=4))
        stats = m.apis["users"]
        self.assertEqual(stats.latency["kong"].total, 4)
        self.assertEqual(stats.latency["upstream"].count, 0)


class ExpositionTests(SynchronousTestCase):
    def test_parses_with_prometheus_client(self) -> None:
        """The whole exposition parses, with the families and types named as Kong's plugin."""
        m = Metrics()
        m.observe(Ctx())
        m.observe(Ctx(status=502, upstream_latency=None))
        text = m.render()
        self.assertIn("\nkong_bandwidth_bytes{", text)
        families = parse(text)
        self.assertEqual(families["kong_http_requests"].type, "counter")
        self.assertEqual(families["kong_latency_ms"].type, "histogram")
        self.assertEqual(families["kong_bandwidth_bytes"].type, "counter")
        self.assertEqual(
            samples(text, "kong_http_requests_total"),
            {(("api", "users"), ("code", "200")): 1, (("api", "users"), ("code", "502")): 1},
        )
        self.assertEqual(
            # the parser reports counter samples with _total; we write Kong's bare name
            samples(text, "kong_bandwidth_bytes_total"),
            {
                (("api", "users"), ("type", "egress")): 4000,
                (("api", "users"), ("type", "ingress")): 200,
            },
        )

    def test_histogram_series(self) -> None:
        """Buckets are cumulative with +Inf = _count, and _sum is the total in ms."""
        m = Metrics()
        for latency in (3, 45, 70000):
            m.observe(Ctx(request_latency=latency))
        text = m.render()
        buckets = samples(text, "kong_latency_ms_bucket")
        key = lambda le: (("api", "users"), ("le", le), ("type", "request"))  # noqa: E731
        self.assertEqual(buckets[key("2")], 0)
        self.assertEqual(buckets[key("5")], 1)
        self.assertEqual(buckets[key("50")], 2)
        self.assertEqual(buckets[key("60000")], 2)
        self.assertEqual(buckets[key("+Inf")], 3)
        base = (("api", "users"), ("type", "request"))
        self.assertEqual(samples(text, "kong_latency_ms_count")[base], 3)
        self.assertEqual(samples(text, "kong_latency_ms_sum")[base], 70048)

    def test_labels_are_escaped(self) -> None:
        """Quotes, backslashes and newlines in a label survive the round trip."""
        odd = 'a"b\\c\nd'
        self.assertEqual(escape_label(odd), 'a\\"b\\\\c\\nd')
        text = render_families([Family("x", "gauge", "h", [Sample({"l": odd}, 1)])])
        (family,) = text_string_to_metric_families(text)
        self.assertEqual(family.samples[0].labels, {"l": odd})

    def test_values(self) -> None:
        """Integers print bare, floats keep their fraction, infinities and NaN by name."""
        self.assertEqual(format_value(3), "3")
        self.assertEqual(format_value(3.0), "3")
        self.assertEqual(format_value(0.25), "0.25")
        self.assertEqual(format_value(math.inf), "+Inf")
        self.assertEqual(format_value(math.nan), "NaN")
        self.assertEqual(format_value(True), "1")

    def test_empty_registry_still_parses(self) -> None:
        """With no traffic yet the families are declared and the text still parses."""
        families = parse(Metrics().render())
        self.assertEqual(families["kong_http_requests"].samples, [])


class FakeStream:
    """The lag probe's view of an InvalidationStream."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.applied: dict[str, int] = {}
        self.slack = 60.0


class FakeCluster:
    def __init__(self, rows: list[dict[str, Any]], stream: FakeStream) -> None:
        self.rows = rows
        self.stream = stream

    def members(self) -> list[dict[str, Any]]:
        return self.rows


class BrokenStore(MemoryStore):
    """A store whose server is gone."""

    async def ping(self) -> None:
        raise StoreUnavailable("gone")


def fresh_clock() -> Clock:
    fake = FakeReactorTime()
    fake.advance(NOW)
    return Clock(fake)


class ProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = fresh_clock()
        self.store = MemoryStore(TABLES, "node-a", self.clock)

    def families(self, probes: NodeProbes) -> str:
        return render_families(self.successResultOf(_run(probes.families())))

    def test_alone_and_reachable(self) -> None:
        """Without a cluster agent: datastore up, one alive member, no lag."""
        text = self.families(NodeProbes(self.store, self.clock))
        self.assertEqual(samples(text, "kong_datastore_reachable"), {(): 1})
        members = samples(text, "kongtx_cluster_members")
        self.assertEqual(members[(("status", "alive"),)], 1)
        self.assertEqual(members[(("status", "failed"),)], 0)
        self.assertEqual(samples(text, "kongtx_invalidation_lag_seconds"), {(): 0})

    def test_unreachable_datastore(self) -> None:
        """A failing ping reports 0 instead of failing the scrape."""
        broken = BrokenStore(TABLES, "node-a", self.clock)
        text = self.families(NodeProbes(broken, self.clock))
        self.assertEqual(samples(text, "kong_datastore_reachable"), {(): 0})

    def test_members_by_status(self) -> None:
        """Members are counted per gossip status, unknown statuses included."""
        rows = [{"status": "alive"}, {"status": "alive"}, {"status": "failed"}, {"status": "odd"}]
        cluster = FakeCluster(rows, FakeStream("node-a"))
        text = self.families(NodeProbes(self.store, self.clock, lambda: cluster))
        members = samples(text, "kongtx_cluster_members")
        self.assertEqual(members[(("status", "alive"),)], 2)
        self.assertEqual(members[(("status", "failed"),)], 1)
        self.assertEqual(members[(("status", "odd"),)], 1)
        self.assertEqual(members[(("status", "left"),)], 0)

    def test_lag_is_age_of_oldest_unapplied_change(self) -> None:
        """Another node's change not applied here shows as its age; applying it clears the lag."""
        peer = self.store.peer("node-b")
        self.successResultOf(_run(peer.insert("consumers", {"id": "c1", "username": "u"})))
        self.clock.reactor.advance(7.5)  # type: ignore[attr-defined]
        stream = FakeStream("node-a")
        cluster = FakeCluster([], stream)
        probes = NodeProbes(self.store, self.clock, lambda: cluster)
        self.assertEqual(self.successResultOf(_run(probes.invalidation_lag())), 7.5)
        stream.applied["node-b"] = 1
        self.assertEqual(self.successResultOf(_run(probes.invalidation_lag())), 0.0)

    def test_own_changes_are_no_lag(self) -> None:
        """This node's own changes are applied locally and never count as lag."""
        self.successResultOf(_run(self.store.insert("consumers", {"id": "c1", "username": "u"})))
        self.clock.reactor.advance(30)  # type: ignore[attr-defined]
        cluster = FakeCluster([], FakeStream("node-a"))
        probes = NodeProbes(self.store, self.clock, lambda: cluster)
        self.assertEqual(self.successResultOf(_run(probes.invalidation_lag())), 0.0)

    def test_target_health_one_sample_per_state(self) -> None:
        """kong_upstream_target_health: 1 for the state each target is in, 0 for the others;
        a failing source gives an empty family instead of failing the scrape."""

        async def states() -> list[tuple[str, str, str]]:
            return [("u.test", "10.0.0.1:80", "HEALTHY"), ("u.test", "b.test:80", "DNS_ERROR")]

        text = self.families(NodeProbes(self.store, self.clock, target_health=states))
        health = samples(text, "kong_upstream_target_health")
        key = lambda t, s: (("state", s), ("target", t), ("upstream", "u.test"))  # noqa: E731
        self.assertEqual(health[key("10.0.0.1:80", "healthy")], 1)
        self.assertEqual(health[key("10.0.0.1:80", "unhealthy")], 0)
        self.assertEqual(health[key("b.test:80", "dns_error")], 1)
        self.assertEqual(len(health), 8)

        async def broken() -> list[tuple[str, str, str]]:
            raise ConnectionError("datastore down")

        text = self.families(NodeProbes(self.store, self.clock, target_health=broken))
        self.assertEqual(samples(text, "kong_upstream_target_health"), {})
        self.assertIn("# TYPE kong_upstream_target_health gauge", text)
        self.assertEqual(samples(text, "kong_datastore_reachable"), {(): 1})


def _run(coro: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coro)


class StatusResourceTests(SynchronousTestCase):
    def request(
        self, raw: bytes, metrics: Metrics | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        clock = fresh_clock()
        store = MemoryStore(TABLES, "node-a", clock)
        resource = StatusResource(metrics or Metrics(), NodeProbes(store, clock))
        site = Site(resource, reactor=MemoryReactorClock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    def test_metrics_served_and_parseable(self) -> None:
        """GET /metrics answers 200 in the text format with request and node metrics."""
        metrics = Metrics()
        metrics.observe(Ctx())
        status, headers, body = self.request(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", metrics)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], CONTENT_TYPE)
        families = parse(body.decode())
        for name in (
            "kong_http_requests",
            "kong_latency_ms",
            "kong_bandwidth_bytes",
            "kong_datastore_reachable",
            "kongtx_cluster_members",
            "kongtx_invalidation_lag_seconds",
        ):
            self.assertIn(name, families)

    def test_other_paths_are_404(self) -> None:
        """Nothing but /metrics is served."""
        status, _, body = self.request(b"GET /apis HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual((status, body), (404, b'{"message":"Not found"}'))

    def test_other_methods_are_405(self) -> None:
        """POST /metrics is refused with 405 and an Allow header."""
        status, headers, _ = self.request(
            b"POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD")


class ConfigTests(SynchronousTestCase):
    def test_status_listen_default_off(self) -> None:
        """status_listen is off (None) unless an address is given."""
        self.assertIsNone(_build({}).status_listen)
        self.assertIsNone(_build({"status_listen": "off"}).status_listen)

    def test_status_listen_address(self) -> None:
        """An address:port turns the listener on."""
        address = _build({"status_listen": "127.0.0.1:9542"}).status_listen
        assert address is not None
        self.assertEqual((address.host, address.port), ("127.0.0.1", 9542))

    def test_status_listen_invalid(self) -> None:
        """Anything else is refused with the *_listen message."""
        from kongtx.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            _build({"status_listen": "nowhere"})
        self.assertIn("status_listen must be of form 'address:port'", caught.exception.errors)
