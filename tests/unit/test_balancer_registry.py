"""Balancers: rows through the node cache, rebuilt on invalidation; picks, hashing, health."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock as TaskClock
from twisted.trial.unittest import SynchronousTestCase

from kongtx.balancer.balancer import Balancer, parse_target
from kongtx.balancer.dns import TargetResolver
from kongtx.balancer.health_state import HealthState
from kongtx.balancer.registry import MISSING, Balancers, lookup_host
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.proxy.headers import HeaderList
from tests.unit.test_balancer_dns import FakeNames, a_rr, srv_rr


def upstream_row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "u-1",
        "name": "service.v1",
        "algorithm": "round-robin",
        "hash_on": "none",
        "hash_fallback": "none",
        "hash_on_header": None,
        "hash_fallback_header": None,
        "slots": 1000,
    }
    row.update(kw)
    return row


def target_row(target: str, weight: int = 100, created_at: int = 0) -> dict[str, Any]:
    return {
        "id": f"t-{target}",
        "upstream_id": "u-1",
        "target": target,
        "weight": weight,
        "created_at": created_at,
    }


class FakeDAO:
    """Serves upstreams and targets like the DAO's ``find_all`` (equality filters)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {"upstreams": [], "targets": []}
        self.queries: list[str] = []

    async def find_all(self, collection: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.queries.append(collection)
        return [
            dict(r) for r in self.rows[collection] if all(r.get(k) == v for k, v in filters.items())
        ]


class Ctx:
    """What hashing reads of a request."""

    def __init__(self, ip: str = "10.0.0.1", headers: list[tuple[str, str]] | None = None) -> None:
        self.client_ip = ip
        self.consumer: dict[str, Any] | None = None
        self.headers = HeaderList(headers or [])


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = TaskClock()
        self.reactor.advance(1000)
        self.clock = Clock(self.reactor)
        self.cache = Cache(self.clock)
        self.dao = FakeDAO()
        self.names = FakeNames()
        self.health = HealthState()
        self.resolver = TargetResolver(
            self.reactor, self.clock, [("127.0.0.1", 53)], resolver=self.names
        )
        self.balancers = Balancers(self.cache, self.dao, self.health, self.resolver, self.clock)

    def setup_rows(self, upstream: dict[str, Any], *targets: dict[str, Any]) -> None:
        self.dao.rows["upstreams"] = [upstream]
        self.dao.rows["targets"] = list(targets)

    def get(self, name: str = "service.v1") -> Balancer | None:
        return self.successResultOf(Deferred.fromCoroutine(self.balancers.get(name)))

    def picks(self, balancer: Balancer, n: int, ctx: Any = None) -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(n):
            pick = balancer.pick(ctx)
            assert pick is not None
            out[pick.address] += 1
            balancer.release(pick)
        return out

    # ------------------------------------------------------------ lookups

    def test_unknown_name_is_a_cached_negative(self) -> None:
        """No upstream of that name: None, cached, so the next peek answers without the DAO."""
        assert self.balancers.peek("plain.example.com") is MISSING
        assert self.get("plain.example.com") is None
        assert self.balancers.peek("plain.example.com") is None
        assert self.dao.queries == ["upstreams"]

    def test_store_without_upstreams_is_never_balanced(self) -> None:
        """A DAO whose schemas lack upstreams (before the entity exists) balances nothing."""
        self.dao.schemas = {"apis": object()}  # type: ignore[attr-defined]
        assert self.get("anything") is None
        assert self.dao.queries == []

    def test_balancer_cached_until_rows_change(self) -> None:
        """peek returns the same balancer while its rows are cached; invalidation rebuilds it."""
        self.setup_rows(upstream_row(), target_row("10.0.0.1:80"), target_row("10.0.0.2:80"))
        assert self.balancers.peek("service.v1") is MISSING
        balancer = self.get()
        assert balancer is not None
        assert self.balancers.peek("service.v1") is balancer
        self.cache.invalidate("targets:u-1")
        assert self.balancers.peek("service.v1") is MISSING
        self.dao.rows["targets"] = [target_row("10.0.0.3:80")]
        rebuilt = self.get()
        assert rebuilt is not None and rebuilt is not balancer
        assert [p.address for p in rebuilt.peers] == ["10.0.0.3:80"]
        self.cache.invalidate("upstreams:service.v1")
        self.dao.rows["upstreams"] = []
        assert self.get() is None

    # ------------------------------------------------------------ round-robin

    def test_round_robin_by_weight_and_weight_zero(self) -> None:
        """Weights 100/300 split 10/30 over 40 picks; weight 0 is never picked."""
        self.setup_rows(
            upstream_row(),
            target_row("10.0.0.1:80", 100),
            target_row("10.0.0.2:80", 300),
            target_row("10.0.0.3:80", 0),
        )
        balancer = self.get()
        assert balancer is not None
        assert self.picks(balancer, 40) == {"10.0.0.1:80": 10, "10.0.0.2:80": 30}
        pick = balancer.pick()
        assert pick is not None
        assert (pick.upstream_id, pick.target) == ("u-1", pick.address)

    def test_unhealthy_addresses_are_skipped_and_none_left_is_none(self) -> None:
        """HealthState verdicts apply per pick; with nothing healthy pick() is None."""
        self.setup_rows(upstream_row(), target_row("10.0.0.1:80"), target_row("10.0.0.2:80"))
        balancer = self.get()
        assert balancer is not None
        self.health.set("u-1", "10.0.0.1:80", False, "manual")
        assert self.picks(balancer, 6) == {"10.0.0.2:80": 6}
        self.health.set("u-1", "10.0.0.2:80", False, "manual")
        assert balancer.pick() is None
        self.health.set("u-1", "10.0.0.1:80", True, "manual")
        assert self.picks(balancer, 2) == {"10.0.0.1:80": 2}

    def test_avoid_skips_the_failed_address_when_another_exists(self) -> None:
        """A retry never lands on the address that just failed, unless it is the only one."""
        self.setup_rows(upstream_row(), target_row("10.0.0.1:80"), target_row("10.0.0.2:80"))
        balancer = self.get()
        assert balancer is not None
        for _ in range(6):
            pick = balancer.pick(None, avoid="10.0.0.1:80")
            assert pick is not None and pick.address == "10.0.0.2:80"
        self.health.set("u-1", "10.0.0.2:80", False, "passive")
        pick = balancer.pick(None, avoid="10.0.0.1:80")
        assert pick is not None and pick.address == "10.0.0.1:80"

    def test_cleared_weight_and_algorithm_take_their_defaults(self) -> None:
        """PATCH with null clears a field (0.9's rule): a target without weight weighs 100
        (not 0: it must not silently leave the rotation), an upstream without algorithm
        hashes when hash_on is set (the schema's default)."""
        cleared = target_row("10.0.0.2:80")
        del cleared["weight"]
        self.setup_rows(upstream_row(), target_row("10.0.0.1:80", 100), cleared)
        balancer = self.get()
        assert balancer is not None
        assert self.picks(balancer, 4) == {"10.0.0.1:80": 2, "10.0.0.2:80": 2}
        self.cache.invalidate("upstreams:service.v1")
        self.setup_rows(
            upstream_row(algorithm=None, hash_on="ip"),
            target_row("10.0.0.1:80"),
            target_row("10.0.0.2:80"),
        )
        hashed = self.get()
        assert hashed is not None and hashed.algorithm == "consistent-hashing"
        assert len(self.picks(hashed, 6, Ctx(ip="192.0.2.9"))) == 1

    # ------------------------------------------------------------ hashing

    def hashing(self, **kw: Any) -> Balancer:
        fields: dict[str, Any] = {"algorithm": "consistent-hashing"}
        fields.update(kw)
        self.setup_rows(
            upstream_row(**fields),
            target_row("10.0.0.1:80"),
            target_row("10.0.0.2:80"),
            target_row("10.0.0.3:80"),
        )
        balancer = self.get()
        assert balancer is not None
        return balancer

    def test_hash_on_header_is_sticky_and_spreads(self) -> None:
        """One header value always maps to one address; many values use every address."""
        balancer = self.hashing(hash_on="header", hash_on_header="X-User")
        for user in ("alice", "bob", "carol"):
            assert len(self.picks(balancer, 10, Ctx(headers=[("x-user", user)]))) == 1
        spread = {
            balancer.pick(Ctx(headers=[("X-User", f"user{i}")])).address  # type: ignore[union-attr]
            for i in range(60)
        }
        assert len(spread) == 3

    def test_hash_fallback_then_round_robin(self) -> None:
        """An empty hash_on input uses hash_fallback; both empty -> round-robin order."""
        balancer = self.hashing(hash_on="header", hash_on_header="x-user", hash_fallback="ip")
        ctx = Ctx(ip="192.0.2.7")
        assert balancer.hash_key(ctx) == "192.0.2.7"
        assert len(self.picks(balancer, 10, ctx)) == 1
        ctx.headers.set("X-User", "alice")
        assert balancer.hash_key(ctx) == "alice"
        ctx.client_ip = ""
        ctx.headers.remove("x-user")
        assert balancer.hash_key(ctx) is None
        assert len(self.picks(balancer, 9, ctx)) == 3  # round-robin over the three

    def test_hash_on_consumer(self) -> None:
        """hash_on=consumer hashes the authenticated consumer's id."""
        balancer = self.hashing(hash_on="consumer")
        ctx = Ctx()
        assert balancer.hash_key(ctx) is None
        ctx.consumer = {"id": "c-42"}
        assert balancer.hash_key(ctx) == "c-42"
        assert len(self.picks(balancer, 10, ctx)) == 1

    def test_hashing_skips_unhealthy_to_next_point(self) -> None:
        """A key whose address is unhealthy moves on the ring; it returns when healthy again."""
        balancer = self.hashing(hash_on="ip")
        ctx = Ctx(ip="198.51.100.1")
        usual = balancer.pick(ctx)
        assert usual is not None
        self.health.set("u-1", usual.address, False, "active")
        moved = balancer.pick(ctx)
        assert moved is not None and moved.address != usual.address
        self.health.set("u-1", usual.address, True, "active")
        assert balancer.pick(ctx) is usual

    def test_same_rows_same_ring_on_two_nodes(self) -> None:
        """Two registries (two nodes) built from the same rows map keys identically."""
        first = self.hashing(hash_on="header", hash_on_header="x-k")
        other = Balancers(Cache(self.clock), self.dao, HealthState(), self.resolver, self.clock)
        second = self.successResultOf(Deferred.fromCoroutine(other.get("service.v1")))
        assert second is not None and second is not first
        for i in range(100):
            ctx = Ctx(headers=[("x-k", f"v{i}")])
            assert first.pick(ctx).address == second.pick(ctx).address  # type: ignore[union-attr]

    # ------------------------------------------------------------ least connections

    def test_least_connections(self) -> None:
        """Requests in flight steer new picks to the idle address until released."""
        self.setup_rows(
            upstream_row(algorithm="least-connections"),
            target_row("10.0.0.1:80"),
            target_row("10.0.0.2:80"),
        )
        balancer = self.get()
        assert balancer is not None
        held = [balancer.pick(), balancer.pick(), balancer.pick()]
        assert Counter(p.address for p in held if p) == {"10.0.0.1:80": 2, "10.0.0.2:80": 1} or (
            Counter(p.address for p in held if p) == {"10.0.0.1:80": 1, "10.0.0.2:80": 2}
        )
        busy = Counter(p.address for p in held if p).most_common(1)[0][0]
        nxt = balancer.pick()
        assert nxt is not None and nxt.address != busy
        for p in [*held, nxt]:
            assert p is not None
            balancer.release(p)

    # ------------------------------------------------------------ DNS

    def test_named_targets_resolved_and_refreshed(self) -> None:
        """A named target becomes its A records (weight split); SRV gives ports and weights;
        a changed answer after the TTL changes the peers."""
        self.names.a["web.test"] = [
            a_rr("web.test", "10.0.1.1", ttl=10),
            a_rr("web.test", "10.0.1.2", ttl=10),
        ]
        self.names.srv["svc.test"] = (
            [srv_rr("svc.test", "10.0.2.1", 9001, 1), srv_rr("svc.test", "10.0.2.2", 9002, 3)],
            [],
            [],
        )
        self.setup_rows(
            upstream_row(), target_row("web.test:8080", 200, 1), target_row("svc.test:1", 400, 2)
        )
        assert self.balancers.peek("service.v1") is MISSING
        balancer = self.get()
        assert balancer is not None
        assert [(p.address, p.weight) for p in balancer.peers] == [
            ("10.0.1.1:8080", 100.0),
            ("10.0.1.2:8080", 100.0),
            ("10.0.2.1:9001", 100.0),
            ("10.0.2.2:9002", 300.0),
        ]
        assert self.balancers.addresses("u-1") == {
            "web.test:8080": ["10.0.1.1:8080", "10.0.1.2:8080"],
            "svc.test:1": ["10.0.2.1:9001", "10.0.2.2:9002"],
        }
        resolved = self.successResultOf(
            Deferred.fromCoroutine(self.balancers.resolve_upstream(upstream_row()))
        )
        assert resolved["svc.test:1"] == [("10.0.2.1", 9001, 100), ("10.0.2.2", 9002, 300)]
        self.names.a["web.test"] = [a_rr("web.test", "10.0.1.3", ttl=10)]
        self.reactor.advance(31)  # past both TTLs: the next pick refreshes in the background
        balancer.pick()
        pick_addresses = {p.address for p in balancer.peers}
        assert "10.0.1.3:8080" in pick_addresses and "10.0.1.1:8080" not in pick_addresses

    def test_dns_error_target_has_no_addresses(self) -> None:
        """A name that does not resolve contributes no peer; the others still serve."""
        self.setup_rows(upstream_row(), target_row("nowhere.test:80"), target_row("10.0.0.1:80"))
        balancer = self.get()
        assert balancer is not None
        assert [p.address for p in balancer.peers] == ["10.0.0.1:80"]
        assert self.balancers.addresses("u-1")["nowhere.test:80"] == []

    # ------------------------------------------------------------ outcomes

    def test_outcome_listeners_hear_every_report(self) -> None:
        """report() calls each listener; a failing listener does not stop the others."""
        heard: list[tuple[str, str, int]] = []

        def broken(*_: Any) -> None:
            raise RuntimeError("listener bug")

        self.balancers.outcome_listeners.append(broken)
        self.balancers.outcome_listeners.append(
            lambda row, pick, kind, status: heard.append((pick.address, kind, status))
        )
        self.setup_rows(upstream_row(), target_row("10.0.0.1:80"))
        balancer = self.get()
        assert balancer is not None
        pick = balancer.pick()
        assert pick is not None
        self.balancers.report(balancer.upstream, pick, "http", 503)
        assert heard == [("10.0.0.1:80", "http", 503)]
        self.flushLoggedErrors(RuntimeError)


def test_parse_target_and_lookup_host() -> None:
    """Targets parse with Kong's default port; upstream_url hosts drop port and userinfo."""
    assert parse_target("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_target("Example.COM") == ("example.com", 8000)
    assert parse_target("[::1]:8080") == ("::1", 8080)
    assert parse_target("[::1]") == ("::1", 8000)
    assert lookup_host("http://Service.V1:8080/path?q") == "Service.V1"
    assert lookup_host("https://user@svc/") == "svc"
    assert lookup_host("http://[::1]:80/") == "::1"
