"""Health checks: Kong's counters, active probes on the injected clock, passive outcomes."""

from __future__ import annotations

import copy
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kongtx.balancer.health import (
    DEFAULTS,
    ActiveChecker,
    Counts,
    HealthChecks,
    PassiveChecker,
    count,
    healthchecks,
    http_probe,
    target_host,
)
from kongtx.balancer.health_state import HealthState
from kongtx.clock import Clock

UID = "6f2a5a8e-1111-4c6a-9f6e-000000000001"


def checks(**paths: Any) -> dict[str, Any]:
    """The defaults with ``section__sub__key=value`` overrides."""
    merged = copy.deepcopy(DEFAULTS)
    for dotted, value in paths.items():
        node = merged
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return merged


def upstream(uid: str = UID, name: str = "svc", **overrides: Any) -> dict[str, Any]:
    return {"id": uid, "name": name, "healthchecks": checks(**overrides)}


class FakeUpstreams:
    """The DAO's ``find_all('upstreams')`` over a list the test edits."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.reads = 0

    async def find_all(self, collection: str, filters: Any) -> list[Any]:
        assert collection == "upstreams"
        self.reads += 1
        return list(self.rows)


class FakeBalancers:
    """``resolve_upstream`` from a table the test edits; ``outcome_listeners``."""

    def __init__(self, resolved: dict[str, dict[str, list[tuple[str, int, int]]]]) -> None:
        self.resolved = resolved
        self.outcome_listeners: list[Any] = []

    async def resolve_upstream(self, row: Any) -> dict[str, list[tuple[str, int, int]]]:
        if row["id"] not in self.resolved:
            raise OSError("DNS server failure")
        return self.resolved[row["id"]]


class FakePick:
    def __init__(self, addr: str) -> None:
        self.address = addr
        self.upstream_id = UID


class ScriptedProber:
    """Answers each probe with ``outcome[address]``; or holds it when ``hold`` is set."""

    def __init__(self) -> None:
        self.outcome: dict[str, tuple[str, int]] = {}
        self.calls: list[tuple[str, int, str]] = []
        self.hold = False
        self.pending: list[Deferred[Any]] = []

    def __call__(self, ip: str, port: int, host: str, rules: Any) -> Deferred[Any]:
        self.calls.append((ip, port, host))
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d
        return succeed(self.outcome.get(f"{ip}:{port}", ("http", 200)))


class CountTests(SynchronousTestCase):
    def test_consecutive_http_failures_make_unhealthy(self) -> None:
        """http_failures=3: three 500s in a row flip a healthy address; a 200 between resets."""
        rules = checks(passive__unhealthy__http_failures=3)["passive"]
        c = Counts()
        assert count(c, rules, "http", 500, True) is None
        assert count(c, rules, "http", 500, True) is None
        assert count(c, rules, "http", 200, True) is None  # success resets failures
        assert count(c, rules, "http", 500, True) is None
        assert count(c, rules, "http", 503, True) is None
        assert count(c, rules, "http", 500, True) is False

    def test_zero_threshold_disables_and_other_statuses_count_for_nothing(self) -> None:
        """A 0 threshold never trips; a status in neither list is neither success nor failure."""
        rules = checks(passive__unhealthy__tcp_failures=2)["passive"]
        c = Counts()
        for _ in range(10):
            assert count(c, rules, "http", 500, True) is None  # http_failures = 0
            assert count(c, rules, "timeout", 0, True) is None  # timeouts = 0
        assert count(c, rules, "tcp_failure", 0, True) is None
        assert count(c, rules, "http", 404, True) is None  # not in passive lists: no reset
        assert count(c, rules, "tcp_failure", 0, True) is False

    def test_successes_bring_back_and_failures_reset_them(self) -> None:
        """healthy.successes=2 flips an unhealthy address; any failure resets the count."""
        rules = checks(active__healthy__successes=2, active__unhealthy__timeouts=1)["active"]
        c = Counts()
        assert count(c, rules, "http", 200, False) is None
        assert count(c, rules, "timeout", 0, False) is None  # already unhealthy: no verdict
        assert count(c, rules, "http", 302, False) is None
        assert count(c, rules, "http", 200, False) is True
        assert count(c, rules, "timeout", 0, True) is False

    def test_healthchecks_merges_partial_rows_over_defaults(self) -> None:
        """A row with only some fields set gets Kong's defaults for the rest."""
        merged = healthchecks({"healthchecks": {"active": {"healthy": {"interval": 3}}}})
        assert merged["active"]["healthy"] == {
            "interval": 3,
            "http_statuses": [200, 302],
            "successes": 0,
        }
        assert merged["passive"] == DEFAULTS["passive"]
        assert healthchecks({"healthchecks": None}) == DEFAULTS

    def test_target_host(self) -> None:
        """The probe's Host is the target's host without the port."""
        assert target_host("example.com:8000") == "example.com"
        assert target_host("[::1]:8000") == "[::1]"
        assert target_host("example.com") == "example.com"


class ActiveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.clock = Clock(self.reactor)
        self.health = HealthState()
        self.prober = ScriptedProber()
        self.rows = [
            upstream(
                active__healthy__interval=5,
                active__unhealthy__interval=1,
                active__unhealthy__http_failures=2,
                active__healthy__successes=3,
            )
        ]
        self.upstreams = FakeUpstreams(self.rows)
        self.balancers = FakeBalancers(
            {UID: {"a.test:80": [("10.0.0.1", 80, 100)], "b.test:81": [("10.0.0.2", 81, 100)]}}
        )
        self.checker = ActiveChecker(
            self.upstreams,
            self.balancers,
            self.health,
            self.clock,
            prober=self.prober,
            reconcile_interval=30,
        )
        self.addCleanup(self._stopped)

    def _stopped(self) -> None:
        self.checker.stop()
        assert self.clock.pending == 0, "a timer outlived the checker"

    def test_probes_at_the_healthy_interval_with_the_target_host(self) -> None:
        """Healthy addresses are probed every healthy.interval s, Host = the target's host."""
        self.checker.start()
        self.reactor.advance(4.9)
        assert self.prober.calls == []
        self.reactor.advance(0.1)
        assert sorted(self.prober.calls) == [("10.0.0.1", 80, "a.test"), ("10.0.0.2", 81, "b.test")]
        self.reactor.advance(5)
        assert len(self.prober.calls) == 4

    def test_failures_then_unhealthy_interval_then_recovery(self) -> None:
        """Two 500s -> unhealthy (probed every 1 s then); three 200s -> healthy again."""
        changes: list[tuple[str, bool, str]] = []
        self.health.add_listener(lambda u, a, h, s: changes.append((a, h, s)))
        self.prober.outcome["10.0.0.1:80"] = ("http", 500)
        self.checker.start()
        self.reactor.advance(5)
        assert self.health.is_healthy(UID, "10.0.0.1:80")
        self.reactor.advance(5)
        assert not self.health.is_healthy(UID, "10.0.0.1:80")
        assert self.health.is_healthy(UID, "10.0.0.2:81")
        assert changes == [("10.0.0.1:80", False, "active")]
        before = len(self.prober.calls)
        self.reactor.advance(1)
        assert len(self.prober.calls) == before + 1  # the unhealthy interval now
        self.prober.outcome["10.0.0.1:80"] = ("http", 200)
        self.reactor.advance(1)
        self.reactor.advance(1)
        assert not self.health.is_healthy(UID, "10.0.0.1:80")
        self.reactor.advance(1)
        assert self.health.is_healthy(UID, "10.0.0.1:80")
        assert changes[-1] == ("10.0.0.1:80", True, "active")

    def test_tcp_failures_and_timeouts_thresholds(self) -> None:
        """tcp_failures and timeouts count separately against their own thresholds."""
        self.rows[0] = upstream(
            active__healthy__interval=1, active__unhealthy__tcp_failures=2,
            active__unhealthy__timeouts=3,
        )  # fmt: skip
        self.prober.outcome["10.0.0.1:80"] = ("tcp_failure", 0)
        self.prober.outcome["10.0.0.2:81"] = ("timeout", 0)
        self.checker.start()
        self.reactor.advance(1)
        self.reactor.advance(1)
        assert not self.health.is_healthy(UID, "10.0.0.1:80")
        assert self.health.is_healthy(UID, "10.0.0.2:81")
        self.reactor.advance(1)
        assert not self.health.is_healthy(UID, "10.0.0.2:81")

    def test_unhealthy_interval_zero_stops_probing_until_someone_else_heals(self) -> None:
        """With unhealthy.interval=0 an unhealthy address is not probed; a manual /healthy
        puts it back on the healthy interval."""
        self.rows[0] = upstream(active__healthy__interval=1, active__unhealthy__http_failures=1)
        self.prober.outcome["10.0.0.1:80"] = ("http", 500)
        self.checker.start()
        self.reactor.advance(1)
        assert not self.health.is_healthy(UID, "10.0.0.1:80")
        calls = [c for c in self.prober.calls if c[0] == "10.0.0.1"]
        self.reactor.advance(10)
        assert [c for c in self.prober.calls if c[0] == "10.0.0.1"] == calls
        self.health.set(UID, "10.0.0.1:80", True, "manual")
        self.reactor.advance(1)
        assert len([c for c in self.prober.calls if c[0] == "10.0.0.1"]) == len(calls) + 1

    def test_marked_unhealthy_elsewhere_starts_unhealthy_probing(self) -> None:
        """healthy.interval=0: nothing is probed until an address is marked unhealthy (by the
        cluster here), then it is probed every unhealthy.interval until it recovers."""
        self.rows[0] = upstream(active__unhealthy__interval=2, active__healthy__successes=1)
        self.checker.start()
        self.reactor.advance(10)
        assert self.prober.calls == []
        self.health.set(UID, "10.0.0.2:81", False, "cluster")
        self.reactor.advance(2)
        assert self.prober.calls == [("10.0.0.2", 81, "b.test")]
        assert self.health.is_healthy(UID, "10.0.0.2:81")
        self.reactor.advance(10)
        assert len(self.prober.calls) == 1

    def test_at_most_concurrency_probes_at_once(self) -> None:
        """concurrency=2 with five addresses: two probes in flight, the next when one ends."""
        self.rows[0] = upstream(active__healthy__interval=1, active__concurrency=2)
        self.balancers.resolved[UID] = {"many.test:80": [(f"10.0.1.{i}", 80, 1) for i in range(5)]}
        self.prober.hold = True
        self.checker.start()
        self.reactor.advance(1)
        assert len(self.prober.pending) == 2
        self.prober.pending[0].callback(("http", 200))
        assert len(self.prober.pending) == 3
        for d in list(self.prober.pending[1:]):
            d.callback(("http", 200))
        assert len(self.prober.pending) == 5
        self.reactor.advance(5)
        assert len(self.prober.pending) == 5  # in-flight probes are not probed again
        for d in self.prober.pending[3:]:
            d.callback(("http", 200))
        self.reactor.advance(1)
        assert len(self.prober.pending) == 7

    def test_reconcile_follows_upstreams_and_targets(self) -> None:
        """Targets added or removed, checks turned off, upstream deleted: probes follow."""
        self.rows[0] = upstream(active__healthy__interval=1)
        self.checker.start()
        self.reactor.advance(1)
        assert len(self.prober.calls) == 2
        self.balancers.resolved[UID] = {"a.test:80": [("10.0.0.1", 80, 100)]}
        self.checker.soon()
        self.reactor.advance(0.1)
        self.prober.calls.clear()
        self.reactor.advance(1)
        assert self.prober.calls == [("10.0.0.1", 80, "a.test")]
        self.rows[0] = upstream()  # active intervals 0: off
        self.checker.soon()
        self.reactor.advance(0.1)
        self.prober.calls.clear()
        self.reactor.advance(5)
        assert self.prober.calls == []
        self.health.set(UID, "10.0.0.1:80", False, "manual")
        self.rows.clear()  # deleted: its verdicts are forgotten
        self.reactor.advance(30)
        assert self.health.is_healthy(UID, "10.0.0.1:80")
        assert self.upstreams.reads >= 4

    def test_a_deleted_target_takes_its_verdict_along(self) -> None:
        """An address no target resolves to any more (target deleted, DNS moved) loses its
        verdict at the next re-read, checks on or off, as Kong's healthchecker drops a
        removed target: deleted and added again, a target starts healthy."""
        self.rows[0] = upstream()  # no active checks: a manual verdict only
        self.health.set(UID, "10.0.0.1:80", False, "manual")
        self.health.set(UID, "10.0.0.2:81", False, "manual")
        self.checker.start()
        self.reactor.advance(0)
        assert not self.health.is_healthy(UID, "10.0.0.1:80")
        self.balancers.resolved[UID] = {"b.test:81": [("10.0.0.2", 81, 100)]}
        self.reactor.advance(30)
        assert self.health.is_healthy(UID, "10.0.0.1:80")
        assert not self.health.is_healthy(UID, "10.0.0.2:81")

    def test_unresolvable_upstream_is_skipped_and_others_probed(self) -> None:
        """An upstream whose targets cannot be resolved does not stop the others' probes."""
        other = "6f2a5a8e-1111-4c6a-9f6e-000000000002"
        self.rows[:] = [
            upstream(other, "broken", active__healthy__interval=1),
            upstream(active__healthy__interval=1),
        ]
        self.checker.start()
        self.reactor.advance(1)
        assert len(self.prober.calls) == 2

    def test_datastore_outage_keeps_the_probes_going(self) -> None:
        """When the upstreams cannot be read, the addresses known are still probed."""
        self.rows[0] = upstream(active__healthy__interval=1)
        self.checker.start()

        async def down(collection: str, filters: Any) -> list[Any]:
            raise ConnectionError("datastore unavailable")

        self.upstreams.find_all = down  # type: ignore[method-assign]
        self.reactor.advance(30)  # a reconcile fails
        self.prober.calls.clear()
        self.reactor.advance(1)
        assert len(self.prober.calls) == 2

    def test_stop_cancels_timers_and_probes_in_flight(self) -> None:
        """After stop nothing is scheduled and held probes are cancelled."""
        self.rows[0] = upstream(active__healthy__interval=1)
        self.prober.hold = True
        self.checker.start()
        self.reactor.advance(1)
        assert len(self.prober.pending) == 2
        self.checker.stop()
        assert self.clock.pending == 0
        assert all(d.called for d in self.prober.pending)
        self.reactor.advance(10)
        assert len(self.prober.pending) == 2


class ProbeTests(SynchronousTestCase):
    """The real HTTP probe, on a memory reactor."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.clock = Clock(self.reactor)

    def probe(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(
            http_probe(self.reactor, self.clock, "10.0.0.1", 8080, "api.test", "/status", 2)
        )

    def connect(self) -> StringTransport:
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        assert (host, port) == ("10.0.0.1", 8080)
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        self.protocol = protocol
        return transport

    def test_status_is_read_and_connection_closed(self) -> None:
        """GET http_path HTTP/1.0 with the target's Host; the status line is the outcome."""
        d = self.probe()
        transport = self.connect()
        assert transport.value() == b"GET /status HTTP/1.0\r\nHost: api.test\r\n\r\n"
        self.assertNoResult(d)
        self.protocol.dataReceived(b"HTTP/1.1 503 Service Unavailable\r\nContent-")
        assert self.successResultOf(d) == ("http", 503)
        assert transport.disconnecting or transport.disconnected
        assert self.clock.pending == 0

    def test_no_answer_is_a_timeout(self) -> None:
        """Connected but silent for ``timeout`` seconds: a timeout, the connection aborted."""
        d = self.probe()
        transport = self.connect()
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        assert self.successResultOf(d) == ("timeout", 0)
        assert transport.disconnecting or transport.disconnected

    def test_connect_that_never_completes_is_a_timeout(self) -> None:
        """No SYN-ACK within ``timeout``: a timeout (the connect attempt is cancelled)."""
        d = self.probe()
        self.reactor.advance(2)
        assert self.successResultOf(d) == ("timeout", 0)

    def test_refused_is_a_tcp_failure(self) -> None:
        """A refused connect is a tcp_failure."""
        d = self.probe()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        assert self.successResultOf(d) == ("tcp_failure", 0)
        assert self.clock.pending == 0

    def test_garbage_or_early_close_is_a_tcp_failure(self) -> None:
        """Not HTTP, or closed before the status line: a tcp_failure."""
        d = self.probe()
        self.connect()
        self.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n")
        assert self.successResultOf(d) == ("tcp_failure", 0)
        self.reactor.tcpClients.clear()
        d = self.probe()
        self.connect()
        self.protocol.connectionLost(Failure(ConnectionError("reset")))
        assert self.successResultOf(d) == ("tcp_failure", 0)

    def test_tcp_probe_only_connects(self) -> None:
        """type=tcp: a connect is a success (nothing is sent); a refusal a tcp_failure."""
        d = Deferred.fromCoroutine(
            http_probe(self.reactor, self.clock, "10.0.0.1", 8080, "api.test", "/", 2, "tcp")
        )
        transport = self.connect()
        assert self.successResultOf(d) == ("success", 0)
        assert transport.value() == b""
        assert transport.disconnecting or transport.disconnected
        rules = checks(active__healthy__successes=1)["active"]
        assert count(Counts(), rules, "success", 0, False) is True

    def test_https_probe_speaks_tls_with_the_target_sni(self) -> None:
        """type=https: the request goes inside TLS, with the target's host as SNI."""
        d = Deferred.fromCoroutine(
            http_probe(self.reactor, self.clock, "10.0.0.1", 8443, "api.test", "/", 2, "https")
        )
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        hello = transport.value()
        assert hello[:1] == b"\x16" and b"api.test" in hello  # a ClientHello naming the host
        assert b"GET /" not in hello
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_cancelled_probe_is_cancelled_not_a_failure(self) -> None:
        """Cancelling (the checker stopping) while connecting or reading is not an outcome."""
        d = self.probe()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.reactor.tcpClients.clear()
        d = self.probe()
        transport = self.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert transport.disconnecting or transport.disconnected
        assert self.clock.pending == 0


class PassiveTests(SynchronousTestCase):
    def test_passive_thresholds_and_off(self) -> None:
        """Proxied outcomes count against passive thresholds; nothing when passive is off."""
        health = HealthState()
        passive = PassiveChecker(health)
        passive.start()
        row = upstream(passive__unhealthy__tcp_failures=1, passive__unhealthy__http_failures=2)
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 500)
        assert health.is_healthy(UID, "10.0.0.1:80")
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 500)
        assert not health.is_healthy(UID, "10.0.0.1:80")
        passive.on_outcome(row, FakePick("10.0.0.2:80"), "tcp_failure", 0)
        assert not health.is_healthy(UID, "10.0.0.2:80")
        off = upstream()
        for _ in range(5):
            passive.on_outcome(off, FakePick("10.0.0.3:80"), "tcp_failure", 0)
        assert health.is_healthy(UID, "10.0.0.3:80")

    def test_passive_successes_heal_only_traffic_that_still_arrives(self) -> None:
        """An unhealthy address heals after healthy.successes answers that still reached it."""
        health = HealthState()
        passive = PassiveChecker(health)
        passive.start()
        row = upstream(passive__unhealthy__timeouts=1, passive__healthy__successes=2)
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "timeout", 0)
        assert not health.is_healthy(UID, "10.0.0.1:80")
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 200)
        assert not health.is_healthy(UID, "10.0.0.1:80")
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 201)
        assert health.is_healthy(UID, "10.0.0.1:80")

    def test_a_change_from_elsewhere_restarts_the_counts(self) -> None:
        """Counts start again after any source changes the address (here the cluster)."""
        health = HealthState()
        passive = PassiveChecker(health)
        passive.start()
        row = upstream(passive__unhealthy__http_failures=2)
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 500)
        health.set(UID, "10.0.0.1:80", False, "cluster")
        health.set(UID, "10.0.0.1:80", True, "cluster")
        passive.on_outcome(row, FakePick("10.0.0.1:80"), "http", 500)
        assert health.is_healthy(UID, "10.0.0.1:80")


class HealthChecksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.health = HealthState()
        self.balancers = FakeBalancers(
            {UID: {"a.test:80": [("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1)], "gone.test:80": []}}
        )
        reactor = MemoryReactorClock()
        self.checks = HealthChecks(
            self.health, self.balancers, FakeUpstreams([]), Clock(reactor), reactor
        )
        self.targets = [
            {"id": "t1", "target": "a.test:80", "weight": 100},
            {"id": "t2", "target": "gone.test:80", "weight": 100},
        ]

    def report(self, row: dict[str, Any]) -> dict[str, str]:
        rows = self.successResultOf(Deferred.fromCoroutine(self.checks.report(row, self.targets)))
        return {r["target"]: r["health"] for r in rows}

    def test_states(self) -> None:
        """OFF without checks; DNS_ERROR without addresses; UNHEALTHY only when all are."""
        assert self.report(upstream()) == {
            "a.test:80": "HEALTHCHECKS_OFF",
            "gone.test:80": "DNS_ERROR",
        }
        row = upstream(passive__unhealthy__http_failures=1)
        assert self.report(row)["a.test:80"] == "HEALTHY"
        self.health.set(UID, "10.0.0.1:80", False, "passive")
        assert self.report(row)["a.test:80"] == "HEALTHY"
        self.health.set(UID, "10.0.0.2:80", False, "passive")
        assert self.report(row)["a.test:80"] == "UNHEALTHY"

    def test_manual_sets_every_address_and_turns_off_off(self) -> None:
        """POST /unhealthy sets each resolved address (source manual); after /healthy the
        upstream no longer reports HEALTHCHECKS_OFF."""
        heard: list[tuple[str, bool, str]] = []
        self.health.add_listener(lambda u, a, h, s: heard.append((a, h, s)))
        row = upstream()
        self.successResultOf(
            Deferred.fromCoroutine(self.checks.set_target(row, "a.test:80", False))
        )
        assert heard == [("10.0.0.1:80", False, "manual"), ("10.0.0.2:80", False, "manual")]
        assert self.report(row)["a.test:80"] == "UNHEALTHY"
        self.successResultOf(Deferred.fromCoroutine(self.checks.set_target(row, "a.test:80", True)))
        assert self.report(row)["a.test:80"] == "HEALTHY"

    def test_passive_subscription(self) -> None:
        """start() subscribes the passive checker to the balancer's outcomes; stop() undoes it."""
        self.checks.start()
        assert self.balancers.outcome_listeners == [self.checks.passive.on_outcome]
        self.checks.start()
        assert len(self.balancers.outcome_listeners) == 1
        self.checks.stop()
        assert self.balancers.outcome_listeners == []
