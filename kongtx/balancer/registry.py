# -*- test-case-name: tests.unit.test_balancer_registry -*-
"""The node's balancers: one per upstream, rebuilt when its rows change (issue 9).

An API whose ``upstream_url`` host names an upstream (Kong 1.x's model on our
0.9 API) is balanced over that upstream's targets; any other host is proxied as
before.  The rows come through the node cache (``upstreams:<name>``,
``targets:<upstream_id>``), so an Admin API change anywhere in the cluster
invalidates them and the next request builds a fresh
:class:`~kongtx.balancer.balancer.Balancer` (one upstream's peers and algorithm);
the hot path is two synchronous cache peeks and an identity check.  The proxy
reports each attempt's outcome to :attr:`Balancers.outcome_listeners` (the passive
health checker listens there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from kongtx.balancer.balancer import Balancer, Pick, cached_addresses, target_specs
from kongtx.balancer.dns import TargetResolver, expand, is_ip
from kongtx.balancer.health_state import HealthState, address
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.store.interface import Row, RowView

log = logger("kongtx.balancer")

#: called as listener(upstream_row, pick, kind, status) after every proxied attempt;
#: kind is "tcp_failure", "timeout" or "http" (status: the upstream's status, else 0)
OutcomeListener = Callable[[RowView, Pick, str, int], None]


class _Missing:
    """:meth:`Balancers.peek`'s answer when the cache cannot tell synchronously."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def upstream_key(name: str) -> str:
    """Cache key of the upstream row named ``name`` (or of the row with that id)."""
    return f"upstreams:{name}"


def targets_key(upstream_id: str) -> str:
    """Cache key of an upstream's target rows (created_at order)."""
    return f"targets:{upstream_id}"


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
        cache: Cache,
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

    async def upstream(self, name: str) -> RowView | None:
        """The upstream row named ``name`` (cached, negative entries included).

        A read-only view: the cache keeps a flat row (no ``healthchecks`` table) as a
        ``FrozenRow``, which a compiled ``dict`` annotation would refuse at run time.
        """

        async def load() -> Row | None:
            schemas = getattr(self.dao, "schemas", None)
            if schemas is not None and "upstreams" not in schemas:
                return None  # a store without upstreams: nothing is ever balanced
            rows: list[Row] = await self.dao.find_all("upstreams", {"name": name})
            return rows[0] if rows else None

        row: RowView | None = await self.cache.get_or_load(upstream_key(name), load, None, True)
        return row

    async def targets(self, upstream: RowView) -> list[Row]:
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

    def report(self, upstream: RowView, pick: Pick, kind: str, status: int = 0) -> None:
        """Tell every outcome listener how one attempt ended (a listener's error is logged)."""
        for listener in self.outcome_listeners:
            try:
                listener(upstream, pick, kind, status)
            except Exception:
                log.failure("balancer outcome listener failed for {address}", address=pick.address)


def make_balancers(config: Any, cache: Cache, dao: Any, clock: Clock, reactor: Any) -> Balancers:
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
