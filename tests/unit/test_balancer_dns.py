"""TargetResolver: SRV first then A, TTL caching, stale answers kept, hosts file, weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock as TaskClock
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase

from kongtx.balancer.dns import (
    ERROR_TTL,
    Answer,
    Record,
    TargetResolver,
    expand,
    is_ip,
    parse_resolv_conf,
)
from kongtx.clock import Clock

Result = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


def a_rr(name: str, ip: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name=name.encode(), type=dns.A, ttl=ttl, payload=dns.Record_A(ip, ttl=ttl))


def srv_rr(
    name: str, target: str, port: int, weight: int, priority: int = 1, ttl: int = 30
) -> dns.RRHeader:
    payload = dns.Record_SRV(priority, weight, port, target.encode(), ttl=ttl)
    return dns.RRHeader(name=name.encode(), type=dns.SRV, ttl=ttl, payload=payload)


class FakeNames:
    """An IResolver answering from dicts; ``hold`` makes queries wait for the test."""

    def __init__(self) -> None:
        self.srv: dict[str, Result] = {}
        self.a: dict[str, list[dns.RRHeader]] = {}
        self.queries: list[tuple[str, str]] = []
        self.hold = False
        self.broken = False
        self.held: list[tuple[Deferred[Result], Result]] = []

    def _answer(self, result: Result | None) -> Deferred[Result]:
        if self.broken:
            return fail(dns_error.DNSQueryTimeoutError(None))
        if result is None:
            return fail(dns_error.DNSNameError())
        if self.hold:
            d: Deferred[Result] = Deferred()
            self.held.append((d, result))
            return d
        return succeed(result)

    def release(self) -> None:
        held, self.held = self.held, []
        for d, result in held:
            d.callback(result)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Result]:
        self.queries.append(("SRV", name))
        return self._answer(self.srv.get(name))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Result]:
        self.queries.append(("A", name))
        records = self.a.get(name)
        return self._answer((records, [], []) if records else None)


class ResolverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = TaskClock()
        self.reactor.advance(1000)
        self.names = FakeNames()
        self.resolver = TargetResolver(
            self.reactor, Clock(self.reactor), [("127.0.0.1", 53)], resolver=self.names
        )

    def resolve(self, host: str) -> Answer:
        return self.successResultOf(Deferred.fromCoroutine(self.resolver.resolve(host)))

    def test_srv_answer_gives_ports_and_weights(self) -> None:
        """An SRV answer: each record's own port and weight, its target's A records, min TTL."""
        self.names.srv["svc.test"] = (
            [srv_rr("svc.test", "a.test", 8001, 10), srv_rr("svc.test", "b.test", 8002, 30)],
            [],
            [a_rr("a.test", "10.0.0.1", ttl=5)],  # glue in the additional section
        )
        self.names.a["b.test"] = [a_rr("b.test", "10.0.0.2")]
        answer = self.resolve("svc.test")
        assert answer.kind == "srv"
        assert answer.records == (Record("10.0.0.1", 8001, 10), Record("10.0.0.2", 8002, 30))
        assert answer.expires == 1005
        assert ("A", "a.test") not in self.names.queries  # glue used

    def test_srv_lowest_priority_only(self) -> None:
        """Only the records of the lowest SRV priority are used (RFC 2782)."""
        self.names.srv["svc.test"] = (
            [
                srv_rr("svc.test", "10.0.0.1", 80, 1, priority=10),
                srv_rr("svc.test", "10.0.0.2", 81, 1, priority=20),
            ],
            [],
            [],
        )
        assert self.resolve("svc.test").records == (Record("10.0.0.1", 80, 1),)

    def test_a_records_when_no_srv(self) -> None:
        """Without SRV records the A records are the answer."""
        self.names.a["web.test"] = [a_rr("web.test", "10.0.0.3"), a_rr("web.test", "10.0.0.4")]
        answer = self.resolve("web.test")
        assert answer.kind == "a"
        assert [r.ip for r in answer.records] == ["10.0.0.3", "10.0.0.4"]
        assert self.names.queries == [("SRV", "web.test"), ("A", "web.test")]

    def test_ttl_cache_then_background_refresh_keeps_stale(self) -> None:
        """Within the TTL no query; after it the stale answer serves while one refresh runs."""
        self.names.a["web.test"] = [a_rr("web.test", "10.0.0.3", ttl=10)]
        first = self.resolve("web.test")
        count = len(self.names.queries)
        assert self.resolve("web.test") is first
        assert self.resolver.cached("web.test") is first
        assert len(self.names.queries) == count
        self.reactor.advance(11)
        self.names.hold = True
        self.names.a["web.test"] = [a_rr("web.test", "10.0.0.9", ttl=10)]
        version = self.resolver.version
        assert self.resolver.cached("web.test") is first  # stale, refresh started
        assert self.resolver.cached("web.test") is first  # one refresh only
        assert len(self.names.held) == 1
        self.names.release()
        self.names.release()
        answer = self.resolver.cached("web.test")
        assert answer is not None and answer.records == (Record("10.0.0.9", 0, 0),)
        assert self.resolver.version == version + 1

    def test_failed_refresh_keeps_stale_answer(self) -> None:
        """A refresh that fails keeps the last good answer and retries after ERROR_TTL."""
        self.names.a["web.test"] = [a_rr("web.test", "10.0.0.3", ttl=10)]
        first = self.resolve("web.test")
        self.reactor.advance(11)
        self.names.broken = True
        again = self.resolve("web.test")
        assert again.records == first.records and again.kind == "a"
        assert again.expires == self.reactor.seconds() + ERROR_TTL

    def test_unresolvable_name_is_an_error_answer(self) -> None:
        """A name with no records at all: an error answer (no addresses), cached briefly."""
        answer = self.resolve("nothing.test")
        assert answer.kind == "error" and answer.records == () and answer.error
        assert self.resolver.cached("nothing.test") is answer
        assert expand(answer, 80, 100) == []

    def test_concurrent_resolves_share_one_query(self) -> None:
        """Two waiters, one query; cancelling one waiter leaves the other's result intact."""
        self.names.hold = True
        self.names.a["web.test"] = [a_rr("web.test", "10.0.0.3")]
        d1 = Deferred.fromCoroutine(self.resolver.resolve("web.test"))
        d2 = Deferred.fromCoroutine(self.resolver.resolve("web.test"))
        # SRV -> NXDOMAIN at once; the A query is held, and asked once for both waiters
        assert self.names.queries == [("SRV", "web.test"), ("A", "web.test")]
        d1.cancel()
        self.failureResultOf(d1)
        self.names.release()
        assert self.successResultOf(d2).records == (Record("10.0.0.3", 0, 0),)


def test_hosts_file_first_without_custom_servers(tmp_path: Path) -> None:
    """With the system configuration the hosts file answers before any DNS query."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.1.2.3 app.internal app\n::1 localhost\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.9.9.9\n")
    reactor = TaskClock()
    names = FakeNames()
    resolver = TargetResolver(
        reactor, Clock(reactor), (), resolver=names, hosts_file=str(hosts), resolv_conf=str(resolv)
    )
    d = Deferred.fromCoroutine(resolver.resolve("app.internal"))
    assert d.called
    answer = d.result
    assert answer.records == (Record("10.1.2.3", 0, 0),) and names.queries == []


def test_expand_splits_the_target_weight() -> None:
    """A records share the target's weight evenly; SRV records by their weights (0 counts 1)."""
    a = Answer("a", (Record("10.0.0.1", 0, 0), Record("10.0.0.2", 0, 0)), 0)
    assert expand(a, 8000, 100) == [("10.0.0.1", 8000, 50.0), ("10.0.0.2", 8000, 50.0)]
    srv = Answer("srv", (Record("10.0.0.1", 81, 10), Record("10.0.0.2", 82, 30)), 0)
    assert expand(srv, 8000, 100) == [("10.0.0.1", 81, 25.0), ("10.0.0.2", 82, 75.0)]
    zero = Answer("srv", (Record("10.0.0.1", 81, 0), Record("10.0.0.2", 82, 0)), 0)
    assert [w for _, _, w in expand(zero, 1, 100)] == [50.0, 50.0]
    assert expand(None, 1, 100) == []


def test_resolv_conf_and_ip_literals() -> None:
    """nameserver lines are read; IPv4 and IPv6 literals need no DNS."""
    text = "# comment\nsearch x\nnameserver 10.0.0.53\nnameserver bogus\nnameserver ::1 # v6\n"
    assert parse_resolv_conf(text) == [("10.0.0.53", 53), ("::1", 53)]
    assert is_ip("10.0.0.1") and is_ip("::1") and not is_ip("example.com")
