# -*- test-case-name: tests.unit.test_workers -*-
"""``proxy_listen`` and ``proxy_listen_ssl`` served by worker processes inside a node.

With ``nginx_worker_processes`` >= 2 the node is the master: it binds both proxy
sockets and :class:`ProxyWorkers` spawns the workers that adopt them, while the
node keeps the Admin API, the cluster agent, ``status_listen`` and the DAO.
What the node learns reaches every worker through the control lines:

* cache invalidations (DAO listener, cluster stream, ``DELETE /cache``):
  :func:`~kongtx.workers.master.fan_out` on the node's cache;
* target health verdicts: every change of the node's health table (active
  probes, which run in the master only, ``POST .../healthy|unhealthy``, gossip
  from other nodes) is forwarded to every worker; a worker's own verdicts
  (passive checks) come to the master, which applies them to its table (and so
  gossips them) and forwards them to the other workers;
* a worker's own writes (plugins writing on the proxy path): after each commit the
  worker sends ``changed`` with its store's origin and the keys; the node's cache
  drops them (and, through ``fan_out``, every worker's) and ``stream`` (the
  cluster's :class:`~kongtx.cluster.events.InvalidationStream`) publishes that
  origin's new log rows to the other nodes at once; once the worker has exited,
  its origin's last rows are published and the origin forgotten;
* DB-less: a configuration posted to the master (``POST /config``) is sent to
  every worker and written to ``<prefix>/dbless.json``, which workers started
  later load instead of the start-up file;
* the ``local`` rate-limiting counters live in ``<prefix>/local_counters.shm``,
  shared by the master and its workers.

Workers report their counters every second (:mod:`kongtx.workers.stats`).

The sockets are bound at start, or adopted from the node (``adopt``: a ``kong
reload`` from 1 to more workers, kongtx.node_workers).  ``reload()`` rolls a new
generation (``kong reload``); a proxy address that
changed gets a new socket, bound before the new generation starts, and the old
socket is closed once the old generation has drained.  A new address that cannot
be bound keeps the old socket (logged), as the node's own listeners do.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock

from kongtx import invalidation
from kongtx.clock import Clock
from kongtx.config import Address
from kongtx.listeners import bind_failed
from kongtx.workers.control import share_local_counters, worker_command
from kongtx.workers.master import WorkerPool, WorkerProcess, bind_listener, fan_out
from kongtx.workers.stats import WorkerStats

#: the DB-less configuration in force, for workers started after a ``POST /config``
DBLESS_FILE = "dbless.json"


def proxy_addresses(config: Any) -> dict[str, Address]:
    """The proxy roles the workers serve, and their addresses."""
    found = {"proxy": config.proxy_listen}
    if config.ssl:
        found["proxy_ssl"] = config.proxy_listen_ssl
    return found


class ProxyWorkers(Service):
    """The proxy listeners served by worker processes, as a service of the node's tree.

    Start: bind the sockets, spawn the workers, forward the node's invalidations
    and health verdicts to them.  Stop: drain them (``graceful``) or stop them.

    ``health``: the node's health table (None: no verdicts are shared).
    ``stream``: what publishes the workers' writes to the cluster (``publish(origin)``
    and ``retire(origin)``; None: DB-less, no cluster).
    ``stats``: where the workers' counters are kept (the node's, so that they outlive
    these workers when the node serves the proxy itself again).
    ``adopt``: role -> (address, listening socket) to serve instead of binding (the
    sockets of the node's own proxy listeners, duplicated: a ``kong reload`` from 1 to
    more workers); they are closed with the others.
    ``document``: DB-less, the configuration posted in force (workers load it, not the file).
    """

    def __init__(
        self,
        config: Any,
        cache: Any,
        clock: Clock,
        reactor: Any,
        conf_path: str | None,
        count: int,
        drain_timeout: float = 30.0,
        health: Any = None,
        stream: Any = None,
        stats: WorkerStats | None = None,
        adopt: Mapping[str, tuple[Address, socket.socket]] | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        self.reactor = reactor
        self.conf_path = conf_path
        self.count = count
        self.drain_timeout = drain_timeout
        self.health = health
        self.stream = stream
        #: each live worker's store origins (from its ``changed`` lines)
        self._origins: dict[WorkerProcess, set[str]] = {}
        self.graceful = True
        #: role -> (address, bound listening socket)
        self.sockets: dict[str, tuple[Address, socket.socket]] = {}
        self.pool: WorkerPool | None = None
        self.stats = WorkerStats() if stats is None else stats
        self.ready: Deferred[None] = Deferred()
        self._reloading = DeferredLock()
        self._adopt = dict(adopt or {})
        self._document = document
        self._unwrap_cache: Callable[[], None] | None = None

    @property
    def socket(self) -> socket.socket | None:
        """The ``proxy_listen`` socket."""
        found = self.sockets.get("proxy")
        return found[1] if found is not None else None

    def startService(self) -> None:
        super().startService()
        adopted, self._adopt = self._adopt, {}
        try:
            for role, address in proxy_addresses(self.config).items():
                if role in adopted:
                    self.sockets[role] = adopted.pop(role)
                    os.set_inheritable(self.sockets[role][1].fileno(), True)
                else:
                    self.sockets[role] = (address, bind_listener(address.host, address.port))
        finally:
            for _, sock in adopted.values():  # roles this configuration no longer has
                sock.close()
        share_local_counters(self.config.prefix, create=True)
        self.pool = WorkerPool(
            self.reactor,
            self.clock,
            worker_command(list(self.sockets), self.conf_path, self.config.prefix),
            [sock.fileno() for _, sock in self.sockets.values()],
            self.count,
        )
        self.pool.on_spawn.append(self._bring_up_to_date)
        self.pool.on_message.append(self._message)
        self.pool.on_exit.append(self.stats.exited)
        self.pool.on_exit.append(self._exited)
        self._unwrap_cache = fan_out(self.cache, self.pool)
        if self.health is not None:
            self.health.add_listener(self._verdict_changed)
        if self._document is not None:
            self.config_replaced(self._document)  # before the first worker reads it
        self.pool.start().chainDeferred(self.ready)

    async def reload(self, config: Any) -> list[str]:
        """A new generation (reading the configuration again) replaces the old one.

        Returns the proxy roles whose socket moved.  Reloads run one after the other.
        """
        await self._reloading.acquire()
        try:
            return await self._reload(config)
        finally:
            self._reloading.release()

    async def _reload(self, config: Any) -> list[str]:
        assert self.pool is not None
        wanted = proxy_addresses(config)
        sockets = dict(self.sockets)
        opened: list[socket.socket] = []
        moved: list[str] = []
        for role, address in wanted.items():
            current = sockets.get(role)
            if current is not None and current[0] == address:
                continue
            try:
                sock = bind_listener(address.host, address.port)
            except OSError as e:
                bind_failed(role, address, e)
                continue
            sockets[role] = (address, sock)
            opened.append(sock)
            moved.append(role)
        for role in [r for r in sockets if r not in wanted]:
            del sockets[role]
            moved.append(role)
        self.config = config
        try:
            await self.pool.reload(
                worker_command(list(sockets), self.conf_path, config.prefix),
                [sock.fileno() for _, sock in sockets.values()],
            )
        except Exception:
            for sock in opened:
                sock.close()
            raise
        old, self.sockets = self.sockets, sockets
        for role, (_, sock) in old.items():
            if role not in sockets or sockets[role][1] is not sock:
                sock.close()
        return moved

    def stop(self, graceful: bool, timeout: float | None = None) -> Deferred[None]:
        """Stop the workers (``graceful``: they drain first), then close the sockets."""

        async def stop() -> None:
            if self.health is not None:
                self.health.remove_listener(self._verdict_changed)
            if self._unwrap_cache is not None:
                self._unwrap_cache()
            if self.pool is not None:
                wait = self.drain_timeout if timeout is None else timeout
                await self.pool.stop(graceful=graceful, timeout=wait)
            for _, sock in self.sockets.values():
                sock.close()
            self.sockets = {}

        return Deferred.fromCoroutine(stop())

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stop(self.graceful)

    # ------------------------------------------------------------ what workers learn

    def config_replaced(self, document: Mapping[str, Any]) -> None:
        """``DeclarativeState.replaced`` hook (DB-less): every worker takes the new document."""
        if self.pool is None:
            return
        path = os.path.join(self.config.prefix, DBLESS_FILE)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(document, f, default=str)
        os.replace(temporary, path)
        self.pool.env["KONG_DECLARATIVE_CONFIG"] = path
        self.pool.broadcast({"op": "config", "document": dict(document)})

    def _bring_up_to_date(self, worker: WorkerProcess) -> None:
        """A worker just spawned learns the verdicts in force (before it accepts)."""
        if self.health is None:
            return
        for upstream_id, address in self.health.all_unhealthy():
            worker.send(_verdict(upstream_id, address, False))

    def _verdict_changed(self, upstream_id: str, address: str, healthy: bool, source: str) -> None:
        """The node's health table changed (any source): every worker applies it."""
        if self.pool is not None:
            self.pool.broadcast(_verdict(upstream_id, address, healthy))

    def _message(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "stats":
            self.stats.received(worker, message)
        elif op == "changed":
            self._changed(worker, message)
        elif op == "health" and self.health is not None:
            upstream_id, address, healthy = (
                message.get("upstream_id"),
                message.get("address"),
                message.get("healthy"),
            )
            if isinstance(upstream_id, str) and isinstance(address, str):
                if isinstance(healthy, bool):
                    # a worker's verdicts come from its passive checks
                    self.health.set(upstream_id, address, healthy, "passive")

    def _changed(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        """A worker committed a write: every cache drops its keys, the cluster hears of it."""
        keys = message.get("keys")
        if isinstance(keys, list):
            invalidation.apply(self.cache, [k for k in keys if isinstance(k, str)])
        origin = message.get("origin")
        # a worker's store origin is <node>-worker-<pid> (kongtx.workers.worker)
        if not isinstance(origin, str) or not origin.endswith(f"-worker-{worker.pid}"):
            return
        self._origins.setdefault(worker, set()).add(origin)
        if self.stream is not None:
            self.stream.publish(origin)

    def _exited(self, worker: WorkerProcess) -> None:
        for origin in self._origins.pop(worker, ()):
            if self.stream is not None:
                self.stream.retire(origin)


def _verdict(upstream_id: str, address: str, healthy: bool) -> dict[str, Any]:
    return {"op": "health", "upstream_id": upstream_id, "address": address, "healthy": healthy}
