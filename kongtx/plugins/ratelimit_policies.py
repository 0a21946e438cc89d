# -*- test-case-name: tests.unit.test_plugin_rate_limiting -*-
"""Where rate-limiting and response-ratelimiting keep their counters (SPEC §4.4).

Three policies, one interface (:class:`~kongtx.plugins.ratelimit_counters.Counters`,
with the windows :func:`~kongtx.plugins.ratelimit_counters.period_starts`):

* ``local``: this node's counters, synchronous (:mod:`kongtx.plugins.ratelimit_local`).
* ``cluster``: the datastore's counter tables (``ratelimiting_metrics``,
  ``response_ratelimiting_metrics``) through ``IStore.increment_counters`` and
  ``read_counters``: atomic increments on every backend, so nodes sharing a
  datastore never lose a count.  Rows are never cleaned (SPEC §7.1).
* ``redis``: the same keys as ``local`` in a Redis server, ``INCRBY`` then
  ``EXPIRE`` when the key was just created, on pooled connections
  (:mod:`kongtx.plugins.redis_client`).

This module chooses the policy a plugin's config names (:func:`counters_for`) and holds
what both handlers share (:class:`CountingPlugin`).  For response-ratelimiting the
metrics rows of a named limit use the period ``<name>_<period>``, as Kong's did.

Why node-wide registries keyed by the clock: handlers are rebuilt whenever their
plugin row changes, but the Redis pools must outlive them; the node's one
:class:`~kongtx.clock.Clock` identifies the node.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.plugins.base import BasePlugin, PluginServices, RequestContext
from kongtx.plugins.ratelimit_counters import PERIOD_SECONDS, PERIODS, Counters, period_starts
from kongtx.plugins.ratelimit_local import local_counters
from kongtx.plugins.redis_client import RedisPool

__all__ = [
    "ClusterCounters",
    "CountingPlugin",
    "RedisCounters",
    "counters_for",
    "identifier_for",
]

log = logger("kongtx.plugins.ratelimit_policies")

#: the body of the 500 a failed counter read gives when not ``fault_tolerant``
INTERNAL_ERROR = {"message": "An unexpected error occurred"}


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


# node-wide Redis pools, keyed by the node's Clock (see the module docstring)
_REDIS: weakref.WeakKeyDictionary[Clock, dict[tuple[str, int, str | None], RedisPool]] = (
    weakref.WeakKeyDictionary()
)


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

    def counted(self, ctx: RequestContext) -> tuple[str, str, Mapping[str, int]]:
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
