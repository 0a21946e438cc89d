# -*- test-case-name: tests.unit.test_plugin_rate_limiting -*-
"""Where rate-limiting and response-ratelimiting keep their counters (SPEC §4.4).

Three policies, one interface (:class:`Counters`):

* ``local``: counters keyed like Kong's shared dict
  (``ratelimit:<api_id>:<identifier>:<period_start_ms>:<period>``), each entry
  expiring one period length after it was created: a dict in this process
  (:class:`ProcessCounters`), or, once :func:`share_local_counters` was called,
  a table in a memory-mapped file shared by the node's worker processes
  (:mod:`kongtx.plugins.shared_counters`), so that a limit is per node as in
  Kong's nginx shared dict.  Exact on one node, and synchronous
  (:meth:`LocalCounters.usage_now`), so the hot path allocates no Deferred.
  Nodes do not share it.
* ``cluster``: the datastore's counter tables (``ratelimiting_metrics``,
  ``response_ratelimiting_metrics``) through ``IStore.increment_counters`` and
  ``read_counters``: atomic increments on every backend, so nodes sharing a
  datastore never lose a count.  Rows are never cleaned (SPEC §7.1).
* ``redis``: the same keys as ``local`` in a Redis server, ``INCRBY`` then
  ``EXPIRE`` when the key was just created, on pooled connections
  (:mod:`kongtx.plugins.redis_client`).

Windows are fixed calendar periods in UTC (:func:`period_starts`).  For
response-ratelimiting the counters carry a limit ``name``: its keys become
``response-ratelimit:<api_id>:<id>:<start>:<name>:<period>`` and its metrics
rows use the period ``<name>_<period>``, as Kong's did.

Why node-wide registries keyed by the clock: handlers are rebuilt whenever their
plugin row changes, but the ``local`` counters and the Redis pools must outlive
them; the node's one :class:`~kongtx.clock.Clock` identifies the node.
"""

from __future__ import annotations

import calendar
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.plugins.base import BasePlugin, PluginServices, RequestContext
from kongtx.plugins.redis_client import RedisPool

if TYPE_CHECKING:
    from kongtx.plugins.shared_counters import CounterTable

__all__ = [
    "PERIODS",
    "PERIOD_SECONDS",
    "ClusterCounters",
    "CountingPlugin",
    "Counters",
    "LocalCounters",
    "ProcessCounters",
    "RedisCounters",
    "counters_for",
    "identifier_for",
    "local_counters",
    "period_starts",
    "share_local_counters",
    "unshare_local_counters",
]

log = logger("kongtx.plugins.ratelimit_policies")

#: the body of the 500 a failed counter read gives when not ``fault_tolerant``
INTERNAL_ERROR = {"message": "An unexpected error occurred"}

#: every period, shortest first
PERIODS = ("second", "minute", "hour", "day", "month", "year")

#: how long a local or Redis counter lives (SPEC §4.4; year is 365 days since 0.9.9)
PERIOD_SECONDS: Mapping[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
    "year": 31536000,
}


def period_starts(now: float) -> dict[str, int]:
    """The start of the current window of every period, epoch ms, aligned in UTC."""
    t = time.gmtime(int(now))
    second = int(now)
    minute = second - t.tm_sec
    hour = minute - 60 * t.tm_min
    day = hour - 3600 * t.tm_hour
    month = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0))
    year = calendar.timegm((t.tm_year, 1, 1, 0, 0, 0, 0, 0, 0))
    return {
        "second": second * 1000,
        "minute": minute * 1000,
        "hour": hour * 1000,
        "day": day * 1000,
        "month": month * 1000,
        "year": year * 1000,
    }


def identifier_for(limit_by: str, ctx: Any) -> str:
    """Who is counted: consumer id → credential id → client IP (SPEC §4.4).

    ``credential`` skips the consumer; ``ip`` is always the client IP (after
    ``trusted_ips``, so it cannot be spoofed with X-Forwarded-For).
    """
    if limit_by == "consumer":
        consumer = ctx.consumer
        if consumer is not None and consumer.get("id"):
            return str(consumer["id"])
        credential = ctx.credential
        if credential is not None and credential.get("consumer_id"):
            return str(credential["consumer_id"])
    if limit_by in ("consumer", "credential"):
        credential = ctx.credential
        if credential is not None and credential.get("id"):
            return str(credential["id"])
    return str(ctx.client_ip)


class Counters(ABC):
    """What the rate-limiting handlers need from a policy.

    A policy says how one counter is keyed (:meth:`key`), read (:meth:`read`) and
    added to (:meth:`add`); asking for several periods at once is the same for all.
    """

    async def usage(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None = None,
    ) -> dict[str, int]:
        """The current count of each of ``periods`` (0 when none yet)."""
        values = await self.read(self.keys(api_id, identifier, starts, periods, name))
        return dict(zip(periods, values, strict=True))

    async def increment(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        amount: int,
        name: str | None = None,
    ) -> None:
        """Add ``amount`` to the counter of every period (all six, as Kong does)."""
        await self.add(self.keys(api_id, identifier, starts, PERIODS, name), amount)

    def keys(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None,
    ) -> list[Any]:
        """The key of each of ``periods``' counters, in that order."""
        return [self.key(api_id, identifier, starts[p], p, name) for p in periods]

    @staticmethod
    def key(api_id: str, identifier: str, start: int, period: str, name: str | None) -> Any:
        """Kong's shared-dict (and Redis) key of one counter."""
        if name is None:
            return f"ratelimit:{api_id}:{identifier}:{start}:{period}"
        return f"response-ratelimit:{api_id}:{identifier}:{start}:{name}:{period}"

    @abstractmethod
    async def read(self, keys: list[Any]) -> list[int]:
        """The count of each key (0 when none yet)."""

    @abstractmethod
    async def add(self, keys: list[Any], amount: int) -> None:
        """Add ``amount`` to the counters of ``keys``: one a period, in :data:`PERIODS` order."""


class LocalCounters(Counters):
    """The ``local`` policy: this node's counters, read and added to synchronously.

    Exact, each counter expiring one period length after it was created.  Two
    stores: :class:`ProcessCounters` (a dict in this process, the default) and
    :class:`~kongtx.plugins.shared_counters.SharedCounters` (a table in a
    memory-mapped file that every worker process of the node shares, after
    :func:`share_local_counters`).  The handlers take the synchronous path for
    both (:meth:`usage_now`, :meth:`increment_now`).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def usage_now(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None = None,
    ) -> dict[str, int]:
        """:meth:`usage` without a Deferred (the hot path)."""
        values = self.read_now(self.keys(api_id, identifier, starts, periods, name))
        return dict(zip(periods, values, strict=True))

    def increment_now(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        amount: int,
        name: str | None = None,
    ) -> None:
        """:meth:`increment` without a Deferred."""
        self.add_now(self.keys(api_id, identifier, starts, PERIODS, name), amount)

    @abstractmethod
    def read_now(self, keys: list[str]) -> list[int]:
        """:meth:`read` without a Deferred: an expired counter reads 0."""

    @abstractmethod
    def add_now(self, keys: list[str], amount: int) -> None:
        """:meth:`add` without a Deferred: an expired counter starts again at ``amount``.

        ``keys`` are one a period, in :data:`PERIODS` order (each lives that period).
        """

    @abstractmethod
    def __len__(self) -> int:
        """How many counters are held (tests and diagnostics)."""

    async def read(self, keys: list[Any]) -> list[int]:
        return self.read_now(keys)

    async def add(self, keys: list[Any], amount: int) -> None:
        self.add_now(keys, amount)


class ProcessCounters(LocalCounters):
    """The ``local`` counters in a dict of this process (a node with one process)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        #: key -> [value, expires_at (epoch seconds)]
        self._counts: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    def read_now(self, keys: list[str]) -> list[int]:
        now = self.clock.seconds()
        counts = self._counts
        out: list[int] = []
        for key in keys:
            entry = counts.get(key)
            out.append(int(entry[0]) if entry is not None and entry[1] > now else 0)
        return out

    def add_now(self, keys: list[str], amount: int) -> None:
        now = self.clock.seconds()
        if now >= self._next_sweep:
            self._sweep(now)
        counts = self._counts
        for key, period in zip(keys, PERIODS, strict=True):
            entry = counts.get(key)
            if entry is None or entry[1] <= now:
                counts[key] = [amount, now + PERIOD_SECONDS[period]]
            else:
                entry[0] += amount

    def _sweep(self, now: float) -> None:
        """Forget expired counters, at most once a second (memory stays bounded by traffic)."""
        self._next_sweep = now + 1.0
        expired = [k for k, (_, expires) in self._counts.items() if expires <= now]
        for key in expired:
            del self._counts[key]

    def __len__(self) -> int:
        """Counters held, including expired ones not yet swept (at most a second old)."""
        return len(self._counts)


class ClusterCounters(Counters):
    """The ``cluster`` policy: atomic counters in the datastore's metrics table."""

    def __init__(self, store: Any, table: str) -> None:
        self.store = store
        self.table = table

    @staticmethod
    def key(api_id: str, identifier: str, start: int, period: str, name: str | None) -> Any:
        """The primary key of one metrics row (a named limit's period is ``<name>_<period>``)."""
        return {
            "api_id": api_id,
            "identifier": identifier,
            "period_date": start,
            "period": period if name is None else f"{name}_{period}",
        }

    async def read(self, keys: list[Any]) -> list[int]:
        return [int(v) for v in await self.store.read_counters(self.table, keys)]

    async def add(self, keys: list[Any], amount: int) -> None:
        await self.store.increment_counters(self.table, keys, amount)


class RedisCounters(Counters):
    """The ``redis`` policy: Kong's keys in Redis, pipelined on a pooled connection."""

    def __init__(self, pool: RedisPool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def read(self, keys: list[Any]) -> list[int]:
        (values,) = await self.pool.execute([("MGET", *keys)], self.timeout)
        return [int(v) if v is not None else 0 for v in values]

    async def add(self, keys: list[Any], amount: int) -> None:
        totals = await self.pool.execute([("INCRBY", k, amount) for k in keys], self.timeout)
        # A key whose total is this increment was just created: give it its lifetime.
        fresh = [
            ("EXPIRE", k, PERIOD_SECONDS[p])
            for k, p, total in zip(keys, PERIODS, totals, strict=True)
            if total == amount
        ]
        if fresh:
            await self.pool.execute(fresh, self.timeout)


# node-wide state, keyed by the node's Clock (see the module docstring)
_LOCAL: weakref.WeakKeyDictionary[Clock, LocalCounters] = weakref.WeakKeyDictionary()
_REDIS: weakref.WeakKeyDictionary[Clock, dict[tuple[str, int, str | None], RedisPool]] = (
    weakref.WeakKeyDictionary()
)
#: the file-backed table every process of the node counts in (share_local_counters)
_shared_table: CounterTable | None = None


def share_local_counters(path: str, *, create: bool, slots: int | None = None) -> None:
    """Count ``local`` in the table of ``path``, shared with the node's other processes.

    The node's master calls it with ``create=True`` (a fresh table, ``slots``
    counters, default :data:`~kongtx.plugins.shared_counters.DEFAULT_SLOTS`), then
    each worker with ``create=False`` (the table must exist and be one of ours,
    else :class:`~kongtx.plugins.shared_counters.BadCounterFile`).  From then on
    :func:`local_counters` returns that table's counters to every caller in this
    process: call it before any plugin is built (a handler keeps the counters it
    was built with).  Without it each process counts in its own dict.
    """
    from kongtx.plugins.shared_counters import CounterTable

    global _shared_table
    _shared_table = CounterTable(path, create=create, slots=slots)
    _LOCAL.clear()


def unshare_local_counters() -> None:
    """Back to per-process dicts, closing the shared table (tests; nothing may still use it)."""
    global _shared_table
    table, _shared_table = _shared_table, None
    _LOCAL.clear()
    if table is not None:
        table.close()


def local_counters(clock: Clock) -> LocalCounters:
    """The node's one ``local`` counter store: the shared table, else a dict."""
    found = _LOCAL.get(clock)
    if found is None:
        if _shared_table is not None:
            from kongtx.plugins.shared_counters import SharedCounters

            found = SharedCounters(clock, _shared_table)
        else:
            found = ProcessCounters(clock)
        _LOCAL[clock] = found
    return found


def redis_pool(clock: Clock, reactor: Any, host: str, port: int, password: str | None) -> RedisPool:
    """The node's pool for one Redis server."""
    pools = _REDIS.get(clock)
    if pools is None:
        pools = _REDIS[clock] = {}
    key = (host, port, password or None)
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = RedisPool(reactor, clock, host, port, password)
    return pool


def counters_for(config: Mapping[str, Any], services: Any, table: str) -> Counters:
    """The policy ``config["policy"]`` names, on this node's services.

    ``table`` is the metrics table of the ``cluster`` policy.
    """
    policy = config.get("policy") or "cluster"
    clock: Clock = services.clock
    if policy == "local":
        return local_counters(clock)
    if policy == "redis":
        reactor = services.reactor if services.reactor is not None else clock.reactor
        pool = redis_pool(
            clock,
            reactor,
            str(config.get("redis_host")),
            int(config.get("redis_port") or 6379),
            config.get("redis_password"),
        )
        return RedisCounters(pool, float(config.get("redis_timeout") or 2000) / 1000.0)
    return ClusterCounters(services.dao.store, table)


class CountingPlugin(BasePlugin):
    """What rate-limiting and response-ratelimiting handlers share: whom they count,
    in which windows, on which policy, and what a failed counter read does."""

    #: the plugin's name, for its log lines
    NAME = ""
    #: the ``cluster`` policy's metrics table
    METRICS_TABLE = ""

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        if services is None:
            raise ValueError(f"{self.NAME} needs the node's services (clock, datastore)")
        self.clock: Clock = services.clock
        self.limit_by = str(config.get("limit_by") or "consumer")
        self.fault_tolerant = config.get("fault_tolerant", True) is not False
        self.counters: Counters = counters_for(config, services, self.METRICS_TABLE)

    def counted(self, ctx: RequestContext) -> tuple[str, str, dict[str, int]]:
        """This request's ``(api_id, identifier, period starts)``."""
        return (
            str(ctx.api["id"]),
            identifier_for(self.limit_by, ctx),
            period_starts(self.clock.seconds()),
        )

    def unreadable(self, ctx: RequestContext, error: Exception) -> None:
        """The usage read failed: ``fault_tolerant`` proxies the request (and logs), else 500."""
        if self.fault_tolerant:
            log.warn(
                "{plugin}: cannot read counters, request proxied unlimited: {error}",
                plugin=self.NAME,
                error=error,
            )
            return
        log.error("{plugin}: cannot read counters: {error}", plugin=self.NAME, error=error)
        ctx.respond(500, INTERNAL_ERROR)
