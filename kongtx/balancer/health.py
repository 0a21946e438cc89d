# -*- test-case-name: tests.unit.test_balancer_health -*-
"""Health checks of upstream targets: active probes and passive counters (issue 9).

Both checkers only *write* :class:`~kongtx.balancer.health_state.HealthState`;
the balancer reads it.  They share one counting rule, Kong 1.x's
(lua-resty-healthcheck): a success resets every failure counter, any failure
resets the success counter; ``healthy.successes`` consecutive successes make an
unhealthy address healthy, ``unhealthy.http_failures`` / ``tcp_failures`` /
``timeouts`` failures of that kind make a healthy address unhealthy; a
threshold of 0 disables that counter.  Whoever changes an address's health
(any source), its counters start again from zero.

* :class:`ActiveChecker` probes every resolved address of every upstream whose
  ``healthchecks.active`` has an interval > 0: an HTTP/1.0 ``GET http_path``
  with ``Host`` = the target's host (over TLS with that SNI for ``type=https``;
  a bare connect for ``type=tcp``), at most ``timeout`` seconds, at most
  ``concurrency`` probes of one upstream at once.  An address is probed every
  ``healthy.interval`` seconds while healthy and every ``unhealthy.interval``
  while unhealthy (0: not probed in that state).  The set of upstreams and
  addresses is re-read every ``reconcile_interval`` seconds (the node passes
  ``db_update_frequency``, which already bounds how stale a remote change may
  be) and soon after a local change of an upstream or target.
* :class:`PassiveChecker` counts the proxy's own outcomes
  (``Balancers.outcome_listeners``) against ``healthchecks.passive``.  Passive
  checks never probe: an unhealthy address gets no traffic, so only the
  successes of traffic that still reaches it (or another source: active
  probes, ``POST .../healthy``, the cluster) bring it back, as in Kong.
* :class:`HealthChecks` is the node's one owner of both, and answers the Admin
  API's ``/healthy``, ``/unhealthy`` and ``/health``.

Probes use a tiny client of their own rather than the proxy's pooled one: a
probe must never reuse a kept-alive connection (that would prove nothing about
accepting new ones) and has to tell a refused connect, a timeout and a status
apart, which is all it reads.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure

from kongtx.balancer.health_state import HealthState, Source, address
from kongtx.clock import Clock
from kongtx.log import logger

log = logger("kongtx.balancer.health")

Row = dict[str, Any]
#: what one attempt or probe came to: "http" (with its status), "tcp_failure", "timeout",
#: or "success" (a ``tcp`` probe connected)
Kind = Literal["http", "tcp_failure", "timeout", "success"]
Outcome = tuple[Kind, int]
#: resolved targets, as ``Balancers.resolve_upstream`` gives them: target -> [(ip, port, weight)]
Resolved = dict[str, list[tuple[str, int, int]]]

#: Kong 1.x's ``healthchecks`` defaults (the issue 9 contract); rows are merged over them.
DEFAULTS: dict[str, Any] = {
    "active": {
        "type": "http",
        "timeout": 1,
        "concurrency": 10,
        "http_path": "/",
        "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
        "unhealthy": {
            "interval": 0,
            "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
            "tcp_failures": 0,
            "timeouts": 0,
            "http_failures": 0,
        },
    },
    "passive": {
        "type": "http",
        "healthy": {
            "http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
            + [300, 301, 302, 303, 304, 305, 306, 307, 308],
            "successes": 0,
        },
        "unhealthy": {
            "http_statuses": [429, 500, 503],
            "tcp_failures": 0,
            "timeouts": 0,
            "http_failures": 0,
        },
    },
}

#: how many bytes a probe reads looking for the status line before giving up
MAX_STATUS_LINE = 8192
_STATUS_LINE = re.compile(rb"^HTTP/\d\.\d (\d{3})(?: |\r?$)")


# ------------------------------------------------------------------ configuration


def _merge(defaults: Mapping[str, Any], given: Any) -> dict[str, Any]:
    merged = copy.deepcopy(dict(defaults))
    if not isinstance(given, Mapping):
        return merged
    for key, value in given.items():
        if isinstance(merged.get(key), dict) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def healthchecks(row: Row) -> dict[str, Any]:
    """The upstream's ``healthchecks`` merged over the defaults (rows written by the
    DAO are complete already; this keeps hand-made or older rows working)."""
    return _merge(DEFAULTS, row.get("healthchecks"))


def active_on(checks: Mapping[str, Any]) -> bool:
    """Does this ``healthchecks`` ask for probes (an active interval > 0)?"""
    active = checks["active"]
    return bool(active["healthy"]["interval"] > 0 or active["unhealthy"]["interval"] > 0)


def passive_on(checks: Mapping[str, Any]) -> bool:
    """Does this ``healthchecks`` count traffic (a passive threshold > 0)?"""
    passive = checks["passive"]
    unhealthy = passive["unhealthy"]
    return bool(
        passive["healthy"]["successes"] > 0
        or unhealthy["tcp_failures"] > 0
        or unhealthy["timeouts"] > 0
        or unhealthy["http_failures"] > 0
    )


def target_host(target: str) -> str:
    """The host part of a ``host:port`` target (``[::1]`` stays bracketed): the probe's Host."""
    if target.startswith("["):
        return target[: target.index("]") + 1] if "]" in target else target
    host, sep, port = target.rpartition(":")
    return host if sep and port.isdigit() else target


# ------------------------------------------------------------------ counting


@dataclass
class Counts:
    """Consecutive outcomes of one address (Kong's four counters)."""

    successes: int = 0
    http_failures: int = 0
    tcp_failures: int = 0
    timeouts: int = 0


def count(
    counts: Counts, rules: Mapping[str, Any], kind: str, status: int, healthy: bool
) -> bool | None:
    """Count one outcome under ``rules`` (an ``active`` or ``passive`` block).

    Returns the new verdict when a threshold is reached and it differs from
    ``healthy`` (the address's current state), else None.  A status in neither
    list counts for nothing, as in Kong.
    """
    good, bad = rules["healthy"], rules["unhealthy"]
    if kind == "success" or (kind == "http" and status in good["http_statuses"]):
        counts.http_failures = counts.tcp_failures = counts.timeouts = 0
        counts.successes += 1
        need = good["successes"]
        return True if not healthy and need > 0 and counts.successes >= need else None
    if kind == "http":
        if status not in bad["http_statuses"]:
            return None
        counts.http_failures += 1
        seen, limit = counts.http_failures, bad["http_failures"]
    elif kind == "tcp_failure":
        counts.tcp_failures += 1
        seen, limit = counts.tcp_failures, bad["tcp_failures"]
    elif kind == "timeout":
        counts.timeouts += 1
        seen, limit = counts.timeouts, bad["timeouts"]
    else:
        return None
    counts.successes = 0
    return False if healthy and limit > 0 and seen >= limit else None


class _Counters:
    """Counts per (upstream id, address), dropped whenever that address changes health."""

    def __init__(self, health: HealthState) -> None:
        self.health = health
        self.counts: dict[tuple[str, str], Counts] = {}

    def record(
        self,
        upstream_id: str,
        addr: str,
        rules: Mapping[str, Any],
        kind: str,
        status: int,
        source: Source,
    ) -> None:
        key = (upstream_id, addr)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = Counts()
        verdict = count(counts, rules, kind, status, self.health.is_healthy(upstream_id, addr))
        if verdict is not None:
            self.counts.pop(key, None)
            if self.health.set(upstream_id, addr, verdict, source):
                log.info(
                    "{source} health check: {addr} of upstream {upstream} is now {state}",
                    source=source,
                    addr=addr,
                    upstream=upstream_id,
                    state="healthy" if verdict else "unhealthy",
                )

    def changed(self, upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        self.counts.pop((upstream_id, addr), None)

    def forget(self, upstream_id: str) -> None:
        for key in [k for k in self.counts if k[0] == upstream_id]:
            del self.counts[key]


# ------------------------------------------------------------------ the probe


class _ProbeProtocol(TxProtocol):
    """Send one request, read the status line, hang up (as lua-resty-healthcheck: a plain
    close once the status is known; an abort when the probe failed or was cancelled)."""

    def __init__(self, request: bytes, status: Deferred[int]) -> None:
        self.request = request
        self.status = status
        self.buffer = b""
        self.closed = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.status.called:
            return
        self.buffer += data
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > MAX_STATUS_LINE:
                self._fail(ValueError("no status line"))
            return
        match = _STATUS_LINE.match(self.buffer[: end + 1].rstrip(b"\n"))
        if match is None:
            self._fail(ValueError(f"bad status line {self.buffer[:end]!r}"))
            return
        self.status.callback(int(match.group(1)))
        self.close(abort=False)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if not self.status.called:
            self.status.errback(ConnectionError("closed before a status line"))

    def _fail(self, error: Exception) -> None:
        self.status.errback(error)
        self.close()

    def close(self, abort: bool = True) -> None:
        """Hang up once (again: nothing); ``abort`` resets instead of closing."""
        transport: Any = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()


class _ProbeFactory(Factory):
    noisy = False  # no "Starting factory" line per probe

    def __init__(self, request: bytes, status: Deferred[int]) -> None:
        self.request = request
        self.status = status
        self.protocol_instance: _ProbeProtocol | None = None

    def buildProtocol(self, addr: object) -> _ProbeProtocol:
        self.protocol_instance = _ProbeProtocol(self.request, self.status)
        return self.protocol_instance


class _ProbeTimeout(Exception):
    pass


def probe_request(host: str, path: str) -> bytes:
    """lua-resty-healthcheck's request: HTTP/1.0, the target's host, nothing else."""
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("latin-1", "replace")


def _probe_endpoint(reactor: Any, kind: str, ip: str, port: int, host: str, timeout: float) -> Any:
    endpoint_type = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
    endpoint: Any = endpoint_type(reactor, ip, port, timeout=max(int(timeout + 1), 1))
    if kind == "https":
        # the proxy's TLS client: SNI = the target's host, certificate not verified
        from kongtx.proxy.upstream import _client_context, _UnverifiedCreator

        endpoint = wrapClientTLS(_UnverifiedCreator(_client_context(), host.strip("[]")), endpoint)
    return endpoint


async def http_probe(
    reactor: Any,
    clock: Clock,
    ip: str,
    port: int,
    host: str,
    path: str,
    timeout: float,
    kind: str = "http",
) -> Outcome:
    """One probe of ``kind`` ``http``, ``https`` or ``tcp`` (a connect is all it checks).

    Never raises (but ``CancelledError``): a refused or broken connection is
    ``("tcp_failure", 0)``, no answer within ``timeout`` s ``("timeout", 0)``, a
    status line ``("http", status)``, a ``tcp`` connect ``("success", 0)``.
    """
    status: Deferred[int] = Deferred()
    factory = _ProbeFactory(b"" if kind == "tcp" else probe_request(host, path), status)
    connecting = _probe_endpoint(reactor, kind, ip, port, host, timeout).connect(factory)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        if not connecting.called:
            connecting.cancel()
        if not status.called:
            status.errback(_ProbeTimeout())

    timer = clock.call_later(timeout, expire)
    try:
        try:
            await connecting
        except Exception as e:
            if expired or isinstance(e, ConnectTimeout | TimeoutError):
                return ("timeout", 0)  # ours cancels the connect: ConnectingCancelledError
            if isinstance(e, CancelledError | ConnectingCancelledError):
                raise CancelledError() from e  # the caller cancelled (checker stopping)
            return ("tcp_failure", 0)
        if kind == "tcp":
            if factory.protocol_instance is not None:
                factory.protocol_instance.close(abort=False)
            return ("success", 0)
        try:
            return ("http", await status)
        except _ProbeTimeout:
            return ("timeout", 0)
        except CancelledError:
            raise
        except Exception:
            return ("tcp_failure", 0)
    finally:
        if timer.active():
            timer.cancel()
        status.addErrback(lambda _: None)  # read above, or nobody will: not "unhandled"
        if factory.protocol_instance is not None:
            factory.protocol_instance.close()


Prober = Callable[[str, int, str, Mapping[str, Any]], Awaitable[Outcome]]


# ------------------------------------------------------------------ what the checkers need


class PickLike(Protocol):
    """The part of the balancer's ``Pick`` the passive checker reads."""

    @property
    def address(self) -> str: ...


class BalancerSource(Protocol):
    """The part of ``kongtx.balancer.registry.Balancers`` health checking uses."""

    outcome_listeners: list[Callable[[Row, Any, str, int], None]]

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


# ------------------------------------------------------------------ active


@dataclass(eq=False)
class _Probed:
    """One resolved address under active checks."""

    address: str
    ip: str
    port: int
    host: str
    timer: IDelayedCall | None = None
    inflight: Deferred[None] | None = None


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
        reactor: Any = None,
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

            def prober(ip: str, port: int, host: str, rules: Mapping[str, Any]) -> Any:
                path, timeout = str(rules["http_path"]), float(rules["timeout"])
                kind = str(rules.get("type") or "http")
                return http_probe(reactor, clock, ip, port, host, path, timeout, kind)

        self.prober: Prober = prober
        self.counters = _Counters(health)
        self.groups: dict[str, _Group] = {}
        self._known: set[str] = set()
        self._loop: Any = None
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
            if not active_on(checks):
                self._drop(upstream_id)
                continue
            resolved = await resolve(self.balancers, row)
            if resolved is None:
                continue
            if generation != self._generation:
                return  # stopped while resolving
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
                self._cancel(group.probed.pop(addr))
        for addr, probed in wanted.items():
            if addr not in group.probed:
                group.probed[addr] = probed
                self._schedule(group, probed)

    def _drop(self, upstream_id: str) -> None:
        group = self.groups.pop(upstream_id, None)
        if group is not None:
            for probed in group.probed.values():
                self._cancel(probed)

    @staticmethod
    def _cancel(probed: _Probed) -> None:
        if probed.timer is not None and probed.timer.active():
            probed.timer.cancel()
        probed.timer = None
        if probed.inflight is not None:
            inflight, probed.inflight = probed.inflight, None
            inflight.cancel()

    # ---------------------------------------------------------------- probing

    def _schedule(self, group: _Group, probed: _Probed) -> None:
        """Next probe at the interval of the address's current state (none when 0)."""
        if probed.timer is not None and probed.timer.active():
            probed.timer.cancel()
        probed.timer = None
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

        d.addErrback(lambda f: None if f.check(CancelledError) else log.failure("probe", f))
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


# ------------------------------------------------------------------ passive


class PassiveChecker:
    """Counts proxied outcomes against the upstream's passive thresholds."""

    def __init__(self, health: HealthState) -> None:
        self.health = health
        self.counters = _Counters(health)
        # upstream id -> (the row seen last, its merged healthchecks): one merge per row version
        self._rules: dict[str, tuple[Row, dict[str, Any]]] = {}

    def start(self) -> None:
        """Restart an address's counts whenever its health changes."""
        self.health.add_listener(self.counters.changed)

    def stop(self) -> None:
        self.health.remove_listener(self.counters.changed)

    def on_outcome(self, upstream: Row, pick: PickLike, kind: str, status: int) -> None:
        """``Balancers.outcome_listeners`` entry: one proxied attempt's outcome."""
        upstream_id = str(upstream["id"])
        cached = self._rules.get(upstream_id)
        if cached is None or cached[0] is not upstream:
            if len(self._rules) > 10000:
                self._rules.clear()
            cached = self._rules[upstream_id] = (upstream, healthchecks(upstream))
        checks = cached[1]
        if not passive_on(checks):
            return
        self.counters.record(upstream_id, pick.address, checks["passive"], kind, status, "passive")


# ------------------------------------------------------------------ the node's view


class HealthChecks:
    """One node's health checking: the table, both checkers and manual verdicts."""

    def __init__(
        self,
        health: HealthState,
        balancers: BalancerSource,
        upstreams: UpstreamSource,
        clock: Clock,
        reactor: Any,
        reconcile_interval: float = 5.0,
    ) -> None:
        self.health = health
        self.balancers = balancers
        self.active = ActiveChecker(
            upstreams,
            balancers,
            health,
            clock,
            reactor=reactor,
            reconcile_interval=reconcile_interval,
        )
        self.passive = PassiveChecker(health)
        #: upstream ids an operator set something on (their /health is never HEALTHCHECKS_OFF)
        self.manual: set[str] = set()

    def start(self) -> None:
        if self.passive.on_outcome not in self.balancers.outcome_listeners:
            self.balancers.outcome_listeners.append(self.passive.on_outcome)
            self.passive.start()
        self.active.start()

    def stop(self) -> None:
        self.active.stop()
        if self.passive.on_outcome in self.balancers.outcome_listeners:
            self.balancers.outcome_listeners.remove(self.passive.on_outcome)
            self.passive.stop()

    def on_change(self, collection: str, kind: Any, old: Any, new: Any) -> None:
        """DAO listener: a local upstream or target change is probed without waiting."""
        if collection in ("upstreams", "targets"):
            self.active.soon()

    async def resolve(self, upstream: Row) -> Resolved:
        """The upstream's targets resolved to addresses ({} when resolution failed)."""
        return await resolve(self.balancers, upstream) or {}

    async def set_target(self, upstream: Row, target: str, healthy: bool) -> None:
        """``POST .../healthy|unhealthy``: every resolved address of ``target``."""
        upstream_id = str(upstream["id"])
        self.manual.add(upstream_id)
        for ip, port, _weight in (await self.resolve(upstream)).get(target, []):
            self.health.set(upstream_id, address(ip, port), healthy, "manual")

    async def report(self, upstream: Row, targets: Sequence[Row]) -> list[dict[str, Any]]:
        """``GET /upstreams/{u}/health``'s rows: each target row plus its ``health``."""
        upstream_id = str(upstream["id"])
        checks = healthchecks(upstream)
        resolved = await self.resolve(upstream)
        down = self.health.unhealthy(upstream_id)
        off = not (active_on(checks) or passive_on(checks) or upstream_id in self.manual or down)
        rows = []
        for row in targets:
            addrs = [address(ip, port) for ip, port, _ in resolved.get(str(row["target"]), [])]
            if not addrs:
                state = "DNS_ERROR"
            elif off:
                state = "HEALTHCHECKS_OFF"
            elif any(a not in down for a in addrs):
                state = "HEALTHY"
            else:
                state = "UNHEALTHY"
            rows.append({**row, "health": state})
        return rows
