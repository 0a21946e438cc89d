# -*- test-case-name: tests.unit.test_balancer_health -*-
"""Active health checks: probe every resolved address of the upstreams that ask for it.

:class:`ActiveChecker` probes every resolved address of every upstream whose
``healthchecks.active`` has an interval > 0: an HTTP/1.0 ``GET http_path`` with
``Host`` = the target's host (over TLS with that SNI for ``type=https``; a bare
connect for ``type=tcp``), at most ``timeout`` seconds, at most ``concurrency``
probes of one upstream at once (:mod:`kongtx.balancer.probe`).  An address is
probed every ``healthy.interval`` seconds while healthy and every
``unhealthy.interval`` while unhealthy (0: not probed in that state), and its
outcomes are counted by Kong's rule (:mod:`kongtx.balancer.health_rules`).  The
set of upstreams and addresses is re-read every ``reconcile_interval`` seconds
(the node passes ``db_update_frequency``, which already bounds how stale a
remote change may be) and soon after a local change of an upstream or target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall, IReactorTCP
from twisted.python.failure import Failure

from kongtx.balancer.health_rules import Counters, Row, active_on, healthchecks, log
from kongtx.balancer.health_state import HealthState, Source, address
from kongtx.balancer.probe import Prober, rules_prober, target_host
from kongtx.clock import Clock
from kongtx.store.interface import RowView

#: resolved targets, as ``Balancers.resolve_upstream`` gives them: target -> [(ip, port, weight)]
Resolved = dict[str, list[tuple[str, int, int]]]


# ------------------------------------------------------------------ what the checkers need


class BalancerSource(Protocol):
    """The part of ``kongtx.balancer.registry.Balancers`` health checking uses."""

    outcome_listeners: list[Callable[[RowView, Any, str, int], None]]

    async def resolve_upstream(self, upstream: Row) -> Resolved: ...


class UpstreamSource(Protocol):
    """Where the upstream rows come from (the DAO)."""

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> list[Any]: ...


async def resolve(balancers: BalancerSource, upstream: Row) -> Resolved | None:
    """The upstream's targets resolved to addresses; None (logged) when that failed."""
    try:
        return await balancers.resolve_upstream(upstream)
    except CancelledError:
        raise
    except Exception as e:
        log.warn(
            "health checks: cannot resolve the targets of upstream {name}: {error}",
            name=upstream.get("name"),
            error=e,
        )
        return None


# ------------------------------------------------------------------ the checker


@dataclass(eq=False)
class _Probed:
    """One resolved address under active checks."""

    address: str
    ip: str
    port: int
    host: str
    timer: IDelayedCall | None = None
    inflight: Deferred[None] | None = None

    def cancel_timer(self) -> None:
        """No next probe (until scheduled again)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def cancel(self) -> None:
        """No next probe, and the one in flight (if any) is cancelled."""
        self.cancel_timer()
        if self.inflight is not None:
            inflight, self.inflight = self.inflight, None
            inflight.cancel()


@dataclass(eq=False)
class _Group:
    """One upstream with active checks on: its rules and its addresses."""

    upstream_id: str
    rules: dict[str, Any]
    semaphore: DeferredSemaphore
    probed: dict[str, _Probed] = field(default_factory=dict)


class ActiveChecker:
    """Probes the addresses of every upstream with active checks on.

    Args:
        upstreams: where the ``upstreams`` rows are read (the DAO).
        balancers: resolves an upstream's targets to addresses.
        health: the node's table (written with ``source="active"``).
        clock: every timer goes through it.
        prober: ``prober(ip, port, host, active_rules) -> Outcome``; the real
            HTTP probe when None (``reactor`` then required).
        reconcile_interval: seconds between two re-reads of the upstreams.
    """

    def __init__(
        self,
        upstreams: UpstreamSource,
        balancers: BalancerSource,
        health: HealthState,
        clock: Clock,
        *,
        reactor: IReactorTCP | None = None,
        prober: Prober | None = None,
        reconcile_interval: float = 5.0,
    ) -> None:
        self.upstreams = upstreams
        self.balancers = balancers
        self.health = health
        self.clock = clock
        self.reconcile_interval = reconcile_interval
        if prober is None:
            if reactor is None:
                raise ValueError("ActiveChecker needs a reactor or a prober")
            prober = rules_prober(reactor, clock)
        self.prober: Prober = prober
        self.counters = Counters(health)
        self.groups: dict[str, _Group] = {}
        self._known: set[str] = set()
        self._loop: Any = None  # a LoopingCall from the clock
        self._soon: IDelayedCall | None = None
        self.running = False
        self._generation = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Read the upstreams now and every ``reconcile_interval`` seconds."""
        if self.running:
            return
        self.running = True
        self.health.add_listener(self._changed)
        self._loop = self.clock.looping_call(self.reconcile_interval, self.reconcile, now=True)

    def stop(self) -> None:
        """Cancel every timer and in-flight probe."""
        self.running = False
        self._generation += 1
        self.health.remove_listener(self._changed)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        for upstream_id in list(self.groups):
            self._drop(upstream_id)

    def soon(self) -> None:
        """Re-read the upstreams shortly (a local upstream or target change)."""
        if not self.running or (self._soon is not None and self._soon.active()):
            return

        def run() -> None:
            self._soon = None
            d = Deferred.fromCoroutine(self.reconcile())
            d.addErrback(lambda f: log.failure("health check reconcile failed", f))

        self._soon = self.clock.call_later(0.1, run)

    # ---------------------------------------------------------------- reconcile

    async def reconcile(self) -> None:
        """Make the probed set match the upstreams and their resolved targets."""
        if not self.running:
            return
        generation = self._generation
        try:
            rows = await self.upstreams.find_all("upstreams", {})
        except CancelledError:
            raise
        except Exception as e:  # the datastore is down: keep probing what we know
            log.warn("health checks: cannot read the upstreams: {error}", error=e)
            return
        if generation != self._generation:
            return
        seen: set[str] = set()
        for row in rows:
            upstream_id = str(row["id"])
            seen.add(upstream_id)
            checks = healthchecks(row)
            active = active_on(checks)
            if not active:
                self._drop(upstream_id)
                if not self.health.unhealthy(upstream_id):
                    continue
            resolved = await resolve(self.balancers, row)
            if resolved is None:
                continue
            if generation != self._generation:
                return  # stopped while resolving
            self._retain(upstream_id, resolved)
            if active:
                self._update(upstream_id, checks["active"], resolved)
        if generation != self._generation:
            return
        for gone in (self._known | set(self.groups)) - seen:
            self._drop(gone)
            self.counters.forget(gone)
            self.health.forget(gone)
        self._known = seen

    def _update(self, upstream_id: str, rules: dict[str, Any], resolved: Resolved) -> None:
        group = self.groups.get(upstream_id)
        if group is not None and group.rules != rules:
            self._drop(upstream_id)
            group = None
        if group is None:
            concurrency = max(int(rules["concurrency"]), 1)
            group = self.groups[upstream_id] = _Group(
                upstream_id, rules, DeferredSemaphore(concurrency)
            )
        wanted: dict[str, _Probed] = {}
        for target, addresses in resolved.items():
            for ip, port, _weight in addresses:
                addr = address(ip, port)
                wanted.setdefault(addr, _Probed(addr, ip, port, target_host(target)))
        for addr in list(group.probed):
            if addr not in wanted:
                group.probed.pop(addr).cancel()
        for addr, probed in wanted.items():
            if addr not in group.probed:
                group.probed[addr] = probed
                self._schedule(group, probed)

    def _retain(self, upstream_id: str, resolved: Resolved) -> None:
        """Forget the verdicts of addresses no target resolves to now (a deleted target
        added again starts healthy, as Kong's healthchecker forgets a removed target)."""
        current = {address(ip, port) for found in resolved.values() for ip, port, _ in found}
        for addr in self.health.retain(upstream_id, current):
            self.counters.counts.pop((upstream_id, addr), None)
            log.info(
                "health of {addr} of upstream {upstream} forgotten: no target resolves to it",
                addr=addr,
                upstream=upstream_id,
            )

    def _drop(self, upstream_id: str) -> None:
        group = self.groups.pop(upstream_id, None)
        if group is not None:
            for probed in group.probed.values():
                probed.cancel()

    # ---------------------------------------------------------------- probing

    def _schedule(self, group: _Group, probed: _Probed) -> None:
        """Next probe at the interval of the address's current state (none when 0)."""
        probed.cancel_timer()
        if probed.inflight is not None or not self.running:
            return  # rescheduled when the probe in flight completes
        healthy = self.health.is_healthy(group.upstream_id, probed.address)
        state = group.rules["healthy" if healthy else "unhealthy"]
        interval = float(state["interval"])
        if interval > 0:
            probed.timer = self.clock.call_later(interval, self._fire, group, probed)

    def _fire(self, group: _Group, probed: _Probed) -> None:
        probed.timer = None
        d: Deferred[None] = group.semaphore.run(self._probe, group, probed)
        probed.inflight = d

        def done(result: object) -> None:
            if probed.inflight is d:
                probed.inflight = None
                if (
                    group.probed.get(probed.address) is probed
                    and self.groups.get(group.upstream_id) is group
                ):
                    self._schedule(group, probed)

        def failed(failure: Failure) -> None:
            if not failure.check(CancelledError):  # cancelled: the checker is stopping
                log.failure("health check probe of {addr} failed", failure, addr=probed.address)

        d.addErrback(failed)
        d.addBoth(done)

    async def _probe(self, group: _Group, probed: _Probed) -> None:
        kind, status = await self.prober(probed.ip, probed.port, probed.host, group.rules)
        log.debug(
            "probe {addr} of upstream {upstream}: {kind} {status}",
            addr=probed.address,
            upstream=group.upstream_id,
            kind=kind,
            status=status,
        )
        self.counters.record(group.upstream_id, probed.address, group.rules, kind, status, "active")

    def _changed(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        """Any change of health changes the probe interval (and restarts the counts)."""
        self.counters.changed(upstream_id, addr, healthy, source)
        group = self.groups.get(upstream_id)
        probed = group.probed.get(addr) if group is not None else None
        if group is not None and probed is not None:
            self._schedule(group, probed)
