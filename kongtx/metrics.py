# -*- test-case-name: tests.unit.test_metrics -*-
"""Prometheus metrics: counters and fixed-bucket histograms, and their text exposition.

Why our own few lines instead of ``prometheus_client``'s registry: its metrics
take a lock and build a label tuple on every update, which is more than the
proxy's hot path should pay for a request.  Here one answered request costs a
dict lookup (its API's :class:`ApiStats`, created the first time that API is
seen), a bisect per latency and a handful of integer additions, all on the
reactor thread, so nothing needs a lock.  Everything else (cumulative buckets,
label escaping, the text format) happens only when ``/metrics`` is scraped.
``prometheus_client`` is used by the tests, whose parser checks what we write.

Names follow Kong's Prometheus plugin where one exists, labelled by ``api``
(Kong 0.9 has APIs, not services and routes): ``kong_http_requests_total``,
``kong_latency_ms`` (``type`` = ``kong``, ``upstream`` or ``request``),
``kong_bandwidth_bytes`` (``type`` = ``ingress`` or ``egress``), plus the node
gauges the status listener measures at scrape time (docs/metrics.md).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: Kong's Prometheus plugin latency buckets (milliseconds).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100,
    200, 300, 400, 500, 1000, 2000, 5000, 10000, 30000, 60000,
)  # fmt: skip

#: The ``type`` label values of ``kong_latency_ms``, in rendering order.
LATENCY_TYPES: tuple[str, ...] = ("kong", "upstream", "request")

MetricType = Literal["counter", "gauge", "histogram"]

#: The exposition format's media type (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Observed(Protocol):
    """What :meth:`Metrics.observe` reads of a request (``kongtx.proxy.context.ProxyContext``)."""

    api: Mapping[str, Any]
    status: int
    proxy_latency: int | None
    upstream_latency: int | None
    request_latency: int | None
    request_size: int
    response_size: int


class Histogram:
    """Fixed buckets updated in place: ``counts[i]`` is the number of values in bucket ``i``.

    ``counts`` is *not* cumulative (one increment per observation); the
    cumulative ``le`` series is computed by :meth:`cumulative` on scrape.  The
    last slot is the ``+Inf`` bucket.
    """

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total: float = 0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is >= it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of values <= le), ...]`` ending with ``("+Inf", count)``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((format_value(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class ApiStats:
    """Everything counted for one API."""

    __slots__ = ("codes", "egress", "ingress", "latency")

    def __init__(self, bounds: Sequence[float]) -> None:
        #: HTTP status -> requests answered with it
        self.codes: dict[int, int] = {}
        #: ``kong`` / ``upstream`` / ``request`` -> its histogram
        self.latency = {kind: Histogram(bounds) for kind in LATENCY_TYPES}
        self.ingress = 0
        self.egress = 0


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: ``<name><suffix>{labels} value``."""

    labels: Mapping[str, str]
    value: float
    suffix: str = ""


@dataclass(frozen=True)
class Family:
    """A metric family: HELP and TYPE, then its samples."""

    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)


class Metrics:
    """The node's request metrics, fed by the proxy pipeline's observer hook."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = tuple(bounds)
        #: api label -> its counters (one entry per API that answered a request)
        self.apis: dict[str, ApiStats] = {}

    def observe(self, ctx: Observed) -> None:
        """Count one answered request (hot path: no lock, no per-request allocation).

        Requests the client abandoned before any status was chosen (``status``
        0) are not counted.  ``kong`` latency is the time spent before the
        upstream was called (the whole request when a plugin answered).
        """
        status = ctx.status
        if not status:
            return
        api = ctx.api
        label = api.get("name") or api.get("id") or ""
        stats = self.apis.get(label)
        if stats is None:
            stats = self.apis[label] = ApiStats(self.bounds)
        codes = stats.codes
        codes[status] = codes.get(status, 0) + 1
        latency = stats.latency
        request = ctx.request_latency
        kong = ctx.proxy_latency
        if kong is None:
            kong = request
        if kong is not None:
            latency["kong"].observe(kong)
        upstream = ctx.upstream_latency
        if upstream is not None:
            latency["upstream"].observe(upstream)
        if request is not None:
            latency["request"].observe(request)
        stats.ingress += ctx.request_size or 0
        stats.egress += ctx.response_size or 0

    def families(self) -> list[Family]:
        """The request metrics as families (APIs and codes in a stable, sorted order)."""
        requests = Family(
            "kong_http_requests_total", "counter", "HTTP requests proxied, by API and status"
        )
        latency = Family(
            "kong_latency_ms",
            "histogram",
            "Latency in ms: kong (before the upstream), upstream, request (total)",
        )
        bandwidth = Family(
            "kong_bandwidth_bytes", "counter", "Bytes received (ingress) and sent (egress)"
        )
        for label in sorted(self.apis):
            stats = self.apis[label]
            for code in sorted(stats.codes):
                requests.samples.append(
                    Sample({"api": label, "code": str(code)}, stats.codes[code])
                )
            for kind in LATENCY_TYPES:
                histogram = stats.latency[kind]
                if not histogram.count:
                    continue
                for le, n in histogram.cumulative():
                    latency.samples.append(
                        Sample({"type": kind, "api": label, "le": le}, n, "_bucket")
                    )
                base = {"type": kind, "api": label}
                latency.samples.append(Sample(base, histogram.count, "_count"))
                latency.samples.append(Sample(base, histogram.total, "_sum"))
            bandwidth.samples.append(Sample({"type": "ingress", "api": label}, stats.ingress))
            bandwidth.samples.append(Sample({"type": "egress", "api": label}, stats.egress))
        return [requests, latency, bandwidth]

    def render(self, extra: Iterable[Family] = ()) -> str:
        """The text exposition of the request metrics followed by ``extra`` families."""
        return render_families([*self.families(), *extra])

    def dump(self) -> dict[str, Any]:
        """Every counter as plain JSON data (what a proxy worker reports to its master)."""
        return {
            label: {
                "codes": {str(code): n for code, n in stats.codes.items()},
                "latency": {
                    kind: [h.counts, h.total, h.count] for kind, h in stats.latency.items()
                },
                "ingress": stats.ingress,
                "egress": stats.egress,
            }
            for label, stats in self.apis.items()
        }

    def add(self, dumped: Mapping[str, Any]) -> None:
        """Add the counters of a :meth:`dump` (of Metrics with the same bounds) to these."""
        for label, data in dumped.items():
            stats = self.apis.get(label)
            if stats is None:
                stats = self.apis[label] = ApiStats(self.bounds)
            for code, n in data["codes"].items():
                stats.codes[int(code)] = stats.codes.get(int(code), 0) + n
            for kind, (counts, total, count) in data["latency"].items():
                histogram = stats.latency[kind]
                if len(counts) == len(histogram.counts):
                    histogram.counts = [
                        a + b for a, b in zip(histogram.counts, counts, strict=True)
                    ]
                    histogram.total += total
                    histogram.count += count
            stats.ingress += data["ingress"]
            stats.egress += data["egress"]


# --------------------------------------------------------------------------- exposition


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (integers without ``.0``, ``+Inf``, ``NaN``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    return repr(value)


def escape_label(value: str) -> str:
    """A label value escaped for the text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render_families(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4 for ``families``, ending with a newline."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels.items())
            name = family.name + sample.suffix
            head = f"{name}{{{labels}}}" if labels else name
            lines.append(f"{head} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


def gauge(name: str, help: str, value: float, labels: Mapping[str, str] | None = None) -> Family:
    """A one-sample gauge family."""
    return Family(name, "gauge", help, [Sample(dict(labels or {}), value)])
