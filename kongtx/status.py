# -*- test-case-name: tests.unit.test_metrics -*-
"""The status listener (``status_listen``): ``GET /metrics`` in Prometheus text format.

Why a listener of its own rather than a route on the Admin API: the Admin API
can change every entity and must stay on a firewalled address, while metrics
are read by a scraper that should be able to see nothing else.  It is off by
default (``status_listen = off``) and serves exactly one path.

Request metrics come from :class:`kongtx.metrics.Metrics` (fed by the proxy);
the node gauges are measured when scraped, never in the background:

* ``kong_datastore_reachable``: 1 when a ``ping`` of the store succeeds (every
  store fails a ping within its own query timeout, so a scrape cannot hang);
* ``kongtx_cluster_members{status}``: the gossip view of the cluster (this node
  alone, alive, when the cluster agent is not running);
* ``kongtx_invalidation_lag_seconds``: how old the oldest change logged by
  another node in the last ``slack`` seconds is that this node has not applied
  yet; 0 when it is up to date (DESIGN.md §4: staleness is bounded, this shows
  by how much);
* ``kong_upstream_target_health{upstream,target,state}``: Kong 2.x's gauge, each
  target's health as ``GET /upstreams/{u}/health`` reports it on this node (one
  sample per state, 1 for the current one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import CancelledError

from kongtx.clock import Clock
from kongtx.http.resource import AsyncResource, HTTPRequest, json_bytes
from kongtx.log import logger
from kongtx.metrics import CONTENT_TYPE, Family, Metrics, Sample, gauge
from kongtx.store.interface import IStore

log = logger()

#: Member states a Serf cluster reports; each is rendered, 0 when nobody is in it.
MEMBER_STATUSES: tuple[str, ...] = ("alive", "leaving", "left", "failed")
#: a target's states in ``kong_upstream_target_health`` (Kong 2.x's labels)
TARGET_STATES: tuple[str, ...] = ("healthy", "unhealthy", "healthchecks_off", "dns_error")

#: At most this many log rows are read per scrape to measure the lag.
LAG_PAGE = 1000


class StreamLike(Protocol):
    """What the lag probe reads of ``kongtx.cluster.events.InvalidationStream``."""

    origin: str
    applied: dict[str, int]
    slack: float


class ClusterLike(Protocol):
    """What the probes read of ``kongtx.cluster.service.ClusterService``."""

    @property
    def stream(self) -> Any: ...

    def members(self) -> list[dict[str, Any]]: ...


class NodeProbes:
    """The scrape-time gauges of one node.

    ``cluster`` returns the running cluster agent, or ``None`` (not started
    yet, or DB-less); ``self_member`` is the member row to report then.
    """

    def __init__(
        self,
        store: IStore,
        clock: Clock,
        cluster: Callable[[], ClusterLike | None] = lambda: None,
        self_member: Mapping[str, Any] | None = None,
        target_health: Callable[[], Awaitable[list[tuple[str, str, str]]]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cluster = cluster
        self.self_member = dict(self_member or {"status": "alive"})
        #: ``(upstream, target, health)`` of every target (kongtx.balancer.health.HealthChecks)
        self.target_health = target_health

    async def datastore_reachable(self) -> bool:
        """Whether the store answers a ping (any failure counts as unreachable)."""
        try:
            await self.store.ping()
        except CancelledError:
            raise
        except Exception as e:
            log.debug("metrics: datastore ping failed: {error}", error=e)
            return False
        return True

    def members(self) -> dict[str, int]:
        """Member status -> how many members are in it."""
        cluster = self.cluster()
        rows = cluster.members() if cluster is not None else [self.self_member]
        counts = dict.fromkeys(MEMBER_STATUSES, 0)
        for row in rows:
            status = str(row.get("status") or "unknown")
            counts[status] = counts.get(status, 0) + 1
        return counts

    async def invalidation_lag(self) -> float:
        """Seconds since the oldest logged change of another node that is not applied yet."""
        cluster = self.cluster()
        if cluster is None:
            return 0.0
        stream: StreamLike = cluster.stream
        now = self.clock.millis()
        events = await self.store.events_since(now - int(stream.slack * 1000), LAG_PAGE)
        oldest: int | None = None
        for event in events:
            if event.origin == stream.origin:
                continue
            if event.seq > stream.applied.get(event.origin, 0):
                oldest = event.at if oldest is None else min(oldest, event.at)
        if oldest is None:
            return 0.0
        return max(0.0, (now - oldest) / 1000)

    async def families(self) -> list[Family]:
        """The node gauges, measured now."""
        reachable = await self.datastore_reachable()
        lag = 0.0
        if reachable:
            try:
                lag = await self.invalidation_lag()
            except CancelledError:
                raise
            except Exception as e:
                log.debug("metrics: reading the event log failed: {error}", error=e)
        members = Family("kongtx_cluster_members", "gauge", "Cluster members by gossip status", [])
        for status, n in self.members().items():
            members.samples.append(Sample({"status": status}, n))
        extra = [await self.target_health_family()] if self.target_health is not None else []
        return extra + [
            gauge(
                "kong_datastore_reachable",
                "Whether the datastore answered a ping (1) or not (0)",
                1 if reachable else 0,
            ),
            members,
            gauge(
                "kongtx_invalidation_lag_seconds",
                "Age of the oldest change of another node not yet applied here (0: up to date)",
                lag,
            ),
        ]

    async def target_health_family(self) -> Family:
        """Kong 2.x's ``kong_upstream_target_health``: one sample per target and state, 1 for
        the state it is in (a datastore that cannot list the targets gives no samples)."""
        family = Family(
            "kong_upstream_target_health",
            "gauge",
            "Health of each upstream target on this node (1: the state it is in)",
            [],
        )
        assert self.target_health is not None
        try:
            states = await self.target_health()
        except CancelledError:
            raise
        except Exception as e:
            log.debug("metrics: reading target health failed: {error}", error=e)
            return family
        for upstream, target, health in states:
            for state in TARGET_STATES:
                labels = {"upstream": upstream, "target": target, "state": state}
                family.samples.append(Sample(labels, 1 if health.lower() == state else 0))
        return family


class StatusResource(AsyncResource):
    """``GET /metrics`` (and ``HEAD``); every other path is 404, other methods 405."""

    isLeaf = True

    def __init__(self, metrics: Metrics, probes: NodeProbes) -> None:
        super().__init__()
        self.metrics = metrics
        self.probes = probes

    async def handle(self, request: HTTPRequest) -> None:
        path = request.path.rstrip(b"/") or b"/"
        if path != b"/metrics":
            self.respond_json(request, 404, {"message": "Not found"})
            return
        if request.method not in (b"GET", b"HEAD"):
            self.respond(
                request,
                405,
                json_bytes({"message": "Method not allowed"}),
                {b"Content-Type": b"application/json; charset=utf-8", b"Allow": b"GET, HEAD"},
            )
            return
        extra = await self.probes.families()
        body = self.metrics.render(extra).encode("utf-8")
        self.respond(request, 200, body, {b"Content-Type": CONTENT_TYPE.encode("ascii")})
