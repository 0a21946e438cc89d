# -*- test-case-name: tests.unit.test_balancer_registry -*-
"""The node's balancers: one per upstream, rebuilt when its rows change (issue 9).

An API whose ``upstream_url`` host names an upstream (Kong 1.x's model on our
0.9 API) is balanced over that upstream's targets; any other host is proxied as
before.  The rows come through the node cache (``upstreams:<name>``,
``targets:<upstream_id>``), so an Admin API change anywhere in the cluster
invalidates them and the next request builds a fresh :class:`Balancer`; the hot
path is two synchronous cache peeks and an identity check.

A :class:`Balancer` expands its targets into peers (one per resolved address:
IP literals as they are, names through :class:`kongtx.balancer.dns.TargetResolver`),
and picks one per attempt with the upstream's algorithm among the peers the
shared :class:`~kongtx.balancer.health_state.HealthState` calls healthy.  The
proxy reports each attempt's outcome to :attr:`Balancers.outcome_listeners`
(the passive health checker listens there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from kongtx.balancer.algorithms import HashRing, LeastConnections, SmoothWeightedRoundRobin
from kongtx.balancer.dns import TargetResolver, expand, is_ip
from kongtx.balancer.health_state import HealthState, address
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.interface import Row

log = logger("kongtx.balancer")

#: A target without a port (never stored so, but tolerated) gets Kong's default.
DEFAULT_TARGET_PORT = 8000
#: A target whose weight was cleared (PATCH null) weighs the schema's default, not 0.
DEFAULT_TARGET_WEIGHT = 100

#: called as listener(upstream_row, pick, kind, status) after every proxied attempt;
#: kind is "tcp_failure", "timeout" or "http" (status: the upstream's status, else 0)
OutcomeListener = Callable[[Row, "Pick", str, int], None]


class _Missing:
    """:meth:`Balancers.peek`'s answer when the cache cannot tell synchronously."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class CacheLike(Protocol):
    def peek(self, key: str) -> tuple[bool, Any]: ...
    async def get_or_load(
        self, key: str, loader: Any, ttl: float | None = ..., negative: bool = ...
    ) -> Any: ...


class HashInputs(Protocol):
    """What consistent hashing reads of a request (``kongtx.proxy.context.ProxyContext``)."""

    client_ip: str
    consumer: Row | None

    @property
    def headers(self) -> Any: ...


def upstream_key(name: str) -> str:
    """Cache key of the upstream row named ``name`` (or of the row with that id)."""
    return f"upstreams:{name}"


def targets_key(upstream_id: str) -> str:
    """Cache key of an upstream's target rows (created_at order)."""
    return f"targets:{upstream_id}"


def parse_target(target: str) -> tuple[str, int]:
    """``(host, port)`` of a target string: ``host:port``, ``[v6]:port``, or a bare host."""
    if target.startswith("["):
        end = target.find("]")
        host = target[1:end]
        rest = target[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else DEFAULT_TARGET_PORT
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host.lower(), int(port) if port else DEFAULT_TARGET_PORT
    if ":" in target:  # a bare IPv6 literal
        return target, DEFAULT_TARGET_PORT
    return target.lower(), DEFAULT_TARGET_PORT


#: ``(target string, host, port, weight)`` of one target row
TargetSpec = tuple[str, str, int, int]


def target_specs(rows: list[Row]) -> list[TargetSpec]:
    """The parsed ``target`` and ``weight`` of target rows, in their order."""
    specs: list[TargetSpec] = []
    for row in rows:
        host, port = parse_target(str(row["target"]))
        weight = row.get("weight")
        weight = DEFAULT_TARGET_WEIGHT if weight is None else int(weight)
        specs.append((str(row["target"]), host, port, weight))
    return specs


def cached_addresses(
    specs: list[TargetSpec], resolver: TargetResolver
) -> dict[str, list[tuple[str, int, float]]]:
    """target string -> its ``(ip, port, weight)`` from what the resolver holds ([]: none)."""
    out: dict[str, list[tuple[str, int, float]]] = {}
    for target, host, port, weight in specs:
        if is_ip(host):
            out[target] = [(host, port, float(weight))]
        else:
            out[target] = expand(resolver.cached(host), port, weight)
    return out


class Pick:
    """One peer a request goes to: a resolved address of one target."""

    __slots__ = ("address", "host", "index", "port", "target", "upstream_id", "weight")

    def __init__(
        self, upstream_id: str, target: str, host: str, port: int, weight: float, index: int
    ) -> None:
        self.upstream_id = upstream_id
        #: the target row's ``target`` string this address came from
        self.target = target
        #: the IP to connect to, and its port
        self.host = host
        self.port = port
        #: ``"ip:port"``, the HealthState key
        self.address = address(host, port)
        self.weight = weight
        self.index = index

    def __repr__(self) -> str:
        return f"<Pick {self.address} of {self.target}>"


class Balancer:
    """The peers of one upstream (as its rows were when built) and its algorithm.

    Args:
        upstream: the upstream row.
        targets: its target rows, created_at order (the order the hash ring is built in).
        resolver: resolves the targets that name hosts; their answers are read from
            its cache, so :attr:`ready` says whether they have all been resolved once.
        health: the node's health table.
        clock: the node clock (DNS TTLs).
    """

    def __init__(
        self,
        upstream: Row,
        targets: list[Row],
        resolver: TargetResolver,
        health: HealthState,
        clock: Clock,
    ) -> None:
        self.upstream = upstream
        self.targets = targets
        self.id: str = upstream["id"]
        self.name: str = upstream.get("name") or ""
        # a cleared algorithm (PATCH null) is the schema's default: hashing when hash_on is set
        self.algorithm: str = upstream.get("algorithm") or (
            "round-robin" if (upstream.get("hash_on") or "none") == "none" else "consistent-hashing"
        )
        self._resolver = resolver
        self._health = health
        self._clock = clock
        self._hash_on: tuple[tuple[str, str], ...] = tuple(
            (str(upstream.get(on) or "none"), str(upstream.get(header) or "").lower())
            for on, header in (
                ("hash_on", "hash_on_header"),
                ("hash_fallback", "hash_fallback_header"),
            )
            if (upstream.get(on) or "none") != "none"
        )
        self._slots = int(upstream.get("slots") or 10000)
        self._targets = target_specs(targets)
        self.names = sorted({host for _, host, _, _ in self._targets if not is_ip(host)})
        self._dynamic = bool(self.names)
        self._dns_version = -1
        self._dns_expires = 0.0
        self.peers: list[Pick] = []
        self._rr = SmoothWeightedRoundRobin([])
        self._ring: HashRing | None = None
        self._lc: LeastConnections | None = None
        self._layout: tuple[tuple[str, str, int, float], ...] = ()
        self._refresh(force=True)

    # ------------------------------------------------------------ peers

    @property
    def ready(self) -> bool:
        """Has every named target been resolved once (successfully or not)?"""
        return all(self._resolver.cached(name) is not None for name in self.names)

    def addresses(self) -> dict[str, list[tuple[str, int, float]]]:
        """target string -> its ``(ip, port, weight)`` now ([] for a DNS error)."""
        return cached_addresses(self._targets, self._resolver)

    def _refresh(self, force: bool = False) -> None:
        """Re-read DNS answers; rebuild the algorithm if the peers changed."""
        resolver = self._resolver
        self._dns_version = resolver.version
        now = self._clock.seconds()
        expires = float("inf")
        layout: list[tuple[str, str, int, float]] = []
        for target, host, port, weight in self._targets:
            if is_ip(host):
                layout.append((target, host, port, float(weight)))
                continue
            answer = resolver.cached(host)  # an expired answer starts its refresh
            if answer is not None:
                expires = min(expires, answer.expires if answer.expires > now else now + 1.0)
            layout.extend((target, ip, p, w) for ip, p, w in expand(answer, port, weight))
        self._dns_expires = expires
        frozen = tuple(layout)
        if not force and frozen == self._layout:
            return
        self._layout = frozen
        self.peers = [
            Pick(self.id, target, host, port, weight, i)
            for i, (target, host, port, weight) in enumerate(frozen)
        ]
        weights = [p.weight for p in self.peers]
        self._rr = SmoothWeightedRoundRobin(weights)
        self._ring = None
        self._lc = None
        if self.algorithm == "consistent-hashing":
            names = [f"{p.address}/{p.target}" for p in self.peers]
            self._ring = HashRing(names, weights, self._slots)
        elif self.algorithm == "least-connections":
            self._lc = LeastConnections(weights)

    # ------------------------------------------------------------ picking

    def pick(self, ctx: HashInputs | None = None, avoid: str | None = None) -> Pick | None:
        """A healthy peer for one attempt, or ``None`` when there is none.

        ``avoid`` (the address the previous attempt failed on) is skipped when any
        other healthy peer exists.  Consistent hashing uses the upstream's hash
        inputs (``hash_on``, then ``hash_fallback``); when both are empty the
        request is placed round-robin.
        """
        if self._dynamic and (
            self._resolver.version != self._dns_version
            or self._clock.seconds() >= self._dns_expires
        ):
            self._refresh()
        peers = self.peers
        if not peers:
            return None
        choice = self._choose(ctx, avoid) if avoid is not None else None
        if choice is None:
            choice = self._choose(ctx, None)
        if choice is None:
            return None
        if self._lc is not None:
            self._lc.acquire(choice)
        return peers[choice]

    def _choose(self, ctx: HashInputs | None, avoid: str | None) -> int | None:
        peers = self.peers
        healthy = self._health.is_healthy
        uid = self.id

        def usable(i: int) -> bool:
            peer = peers[i]
            return peer.address != avoid and healthy(uid, peer.address)

        if self._ring is not None:
            key = self.hash_key(ctx) if ctx is not None else None
            if key:
                return self._ring.next(key, usable)
        elif self._lc is not None:
            return self._lc.next(usable)
        return self._rr.next(usable)

    def hash_key(self, ctx: HashInputs) -> str | None:
        """The request's consistent-hashing key: ``hash_on``'s value, else ``hash_fallback``'s."""
        for on, header in self._hash_on:
            value: Any = None
            if on == "consumer":
                consumer = ctx.consumer
                value = consumer.get("id") if consumer else None
            elif on == "ip":
                value = ctx.client_ip
            elif on == "header" and header:
                value = ctx.headers.get(header)
            if value:
                return str(value)
        return None

    def release(self, pick: Pick) -> None:
        """The request sent to ``pick`` is over (least-connections counts it down)."""
        lc = self._lc
        if lc is not None:
            i = pick.index
            if i < len(self.peers) and self.peers[i] is pick:
                lc.release(i)


class Balancers:
    """One node's balancers by upstream, read through the node cache.

    Args:
        cache: the node cache (``upstreams:<name>``, ``targets:<upstream_id>``).
        dao: loads the rows on a miss (``find_all``).
        health: the node's health table.
        resolver: resolves named targets.
        clock: the node clock.
    """

    def __init__(
        self,
        cache: CacheLike,
        dao: Any,
        health: HealthState,
        resolver: TargetResolver,
        clock: Clock,
    ) -> None:
        self.cache = cache
        self.dao = dao
        self.health = health
        self.resolver = resolver
        self.clock = clock
        #: told (upstream_row, pick, kind, status) after every proxied attempt
        self.outcome_listeners: list[OutcomeListener] = []
        self._by_id: dict[str, Balancer] = {}
        self._names: dict[str, str] = {}

    # ------------------------------------------------------------ lookups

    def peek(self, name: str) -> Balancer | None | _Missing:
        """Hot path: the balancer of upstream ``name`` from cached rows only.

        ``None`` when the cache knows there is no such upstream; :data:`MISSING`
        when a row is not cached (or a named target never resolved): then :meth:`get`.
        """
        hit, row = self.cache.peek(upstream_key(name))
        if not hit:
            return MISSING
        if row is None:
            self._forget(name)
            return None
        hit, targets = self.cache.peek(targets_key(row["id"]))
        if not hit or targets is None:
            return MISSING
        balancer = self._by_id.get(row["id"])
        if balancer is not None and balancer.upstream is row and balancer.targets is targets:
            return balancer
        balancer = Balancer(row, targets, self.resolver, self.health, self.clock)
        if not balancer.ready:
            return MISSING
        return self._keep(name, balancer)

    async def get(self, name: str) -> Balancer | None:
        """The balancer of upstream ``name`` (loading rows and resolving names), or ``None``."""
        found = self.peek(name)
        if not isinstance(found, _Missing):
            return found
        row = await self.upstream(name)
        if row is None:
            self._forget(name)
            return None
        targets = await self.targets(row)
        await self._resolve_names(targets)
        balancer = self._by_id.get(row["id"])
        if balancer is not None and balancer.upstream is row and balancer.targets is targets:
            return balancer
        return self._keep(name, Balancer(row, targets, self.resolver, self.health, self.clock))

    def _keep(self, name: str, balancer: Balancer) -> Balancer:
        self._by_id[balancer.id] = balancer
        self._names[name] = balancer.id
        return balancer

    def _forget(self, name: str) -> None:
        """No upstream is called ``name`` (any more): drop the balancer it had."""
        upstream_id = self._names.pop(name, None)
        if upstream_id is not None:
            self._by_id.pop(upstream_id, None)

    async def upstream(self, name: str) -> Row | None:
        """The upstream row named ``name`` (cached, negative entries included)."""

        async def load() -> Row | None:
            schemas = getattr(self.dao, "schemas", None)
            if schemas is not None and "upstreams" not in schemas:
                return None  # a store without upstreams: nothing is ever balanced
            rows: list[Row] = await self.dao.find_all("upstreams", {"name": name})
            return rows[0] if rows else None

        row: Row | None = await self.cache.get_or_load(upstream_key(name), load, None, True)
        return row

    async def targets(self, upstream: Row) -> list[Row]:
        """The target rows of ``upstream``, created_at order (cached)."""
        upstream_id = upstream["id"]

        async def load() -> list[Row]:
            rows: list[Row] = await self.dao.find_all("targets", {"upstream_id": upstream_id})
            return sorted(rows, key=lambda r: (r.get("created_at") or 0, str(r.get("id"))))

        rows: list[Row] = await self.cache.get_or_load(targets_key(upstream_id), load, None, False)
        return rows

    async def _resolve_names(self, targets: list[Row]) -> None:
        names = {host for _, host, _, _ in target_specs(targets) if not is_ip(host)}
        for name in sorted(names):
            if self.resolver.cached(name) is None:
                await self.resolver.resolve(name)

    # ------------------------------------------------------------ for health checks

    def addresses(self, upstream_id: str) -> dict[str, list[str]]:
        """target string -> its resolved ``"ip:port"`` addresses ([] for a DNS error)."""
        balancer = self._by_id.get(upstream_id)
        if balancer is not None:
            resolved = balancer.addresses()
        else:
            hit, targets = self.cache.peek(targets_key(upstream_id))
            if not hit or not targets:
                return {}
            resolved = cached_addresses(target_specs(targets), self.resolver)
        return {t: [address(ip, p) for ip, p, _ in found] for t, found in resolved.items()}

    async def resolve_upstream(self, upstream: Row) -> dict[str, list[tuple[str, int, int]]]:
        """target string -> ``[(ip, port, weight)]`` now (names resolved; [] on a DNS error)."""
        targets = await self.targets(upstream)
        out: dict[str, list[tuple[str, int, int]]] = {}
        for target, host, port, weight in target_specs(targets):
            if is_ip(host):
                out[target] = [(host, port, weight)]
                continue
            answer = await self.resolver.resolve(host)
            out[target] = [
                (ip, p, max(1, round(w)) if weight > 0 else 0)
                for ip, p, w in expand(answer, port, weight)
            ]
        return out

    # ------------------------------------------------------------ outcomes

    def report(self, upstream: Row, pick: Pick, kind: str, status: int = 0) -> None:
        """Tell every outcome listener how one attempt ended (a listener's error is logged)."""
        for listener in self.outcome_listeners:
            try:
                listener(upstream, pick, kind, status)
            except Exception:
                log.failure("balancer outcome listener failed for {address}", address=pick.address)


def make_balancers(
    config: Any, cache: CacheLike, dao: Any, clock: Clock, reactor: Any
) -> Balancers:
    """A node's :class:`Balancers` with its own health table, configured from ``dns_resolver``."""
    servers = tuple((str(a.host), int(a.port)) for a in getattr(config, "dns_resolver", ()) or ())
    resolver = TargetResolver(reactor, clock, servers)
    return Balancers(cache, dao, HealthState(), resolver, clock)


def lookup_host(upstream_url: str) -> str:
    """The host of an ``upstream_url`` (no port, case kept): what names an upstream.

    The lookup is by the exact name (``upstreams:<name>``), as the contract and
    Kong 1.x have it.
    """
    rest = upstream_url.partition("://")[2]
    for sep in ("/", "?", "#"):
        rest = rest.split(sep, 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.split(":", 1)[0]
