# -*- test-case-name: tests.unit.test_balancer_registry -*-
"""One upstream's balancer: its peers and the algorithm that picks among them.

A :class:`Balancer` expands its targets into peers (one per resolved address:
IP literals as they are, names through :class:`kongtx.balancer.dns.TargetResolver`),
and picks one per attempt with the upstream's algorithm
(:mod:`kongtx.balancer.algorithms`) among the peers the shared
:class:`~kongtx.balancer.health_state.HealthState` calls healthy; a :class:`Pick` is
one such peer.  The node's balancers, one per upstream, are kept and rebuilt by
:class:`kongtx.balancer.registry.Balancers`.
"""

from __future__ import annotations

from typing import Any, Protocol

from kongtx.balancer.algorithms import HashRing, LeastConnections, SmoothWeightedRoundRobin
from kongtx.balancer.dns import TargetResolver, expand, is_ip
from kongtx.balancer.health_state import HealthState, address
from kongtx.clock import Clock
from kongtx.store.interface import Row, RowView

#: A target without a port (never stored so, but tolerated) gets Kong's default.
DEFAULT_TARGET_PORT = 8000
#: A target whose weight was cleared (PATCH null) weighs the schema's default, not 0.
DEFAULT_TARGET_WEIGHT = 100


class HashInputs(Protocol):
    """What consistent hashing reads of a request (``kongtx.proxy.context.ProxyContext``)."""

    client_ip: str
    consumer: RowView | None

    @property
    def headers(self) -> Any: ...


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
        upstream: RowView,
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
