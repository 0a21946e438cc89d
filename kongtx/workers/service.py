# -*- test-case-name: tests.unit.test_workers -*-
"""``proxy_listen`` served by worker processes inside a node (``nginx_worker_processes``)."""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.workers.control import worker_command
from kongtx.workers.master import WorkerPool, bind_listener, fan_out


class ProxyWorkers(Service):
    """``proxy_listen`` served by worker processes, as a service of the node's tree.

    Start: bind the socket, spawn the workers, forward the node cache's
    invalidations to them.  Stop: drain them (``kong quit``) or stop them.
    ``reload()`` rolls a new generation (``kong reload``).
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
    ) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        self.reactor = reactor
        self.conf_path = conf_path
        self.count = count
        self.drain_timeout = drain_timeout
        self.graceful = True
        self.socket: socket.socket | None = None
        self.pool: WorkerPool | None = None
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        listen = self.config.proxy_listen
        self.socket = bind_listener(listen.host, listen.port)
        self.pool = WorkerPool(
            self.reactor,
            self.clock,
            worker_command(1, self.conf_path, self.config.prefix),
            [self.socket.fileno()],
            self.count,
        )
        fan_out(self.cache, self.pool)
        self.pool.start().chainDeferred(self.ready)

    def reload(self) -> Deferred[None]:
        """New workers (reading the configuration again) replace the old ones."""
        assert self.pool is not None
        return self.pool.reload()

    def stopService(self) -> Deferred[None]:
        super().stopService()

        async def stop() -> None:
            if self.pool is not None:
                await self.pool.stop(graceful=self.graceful, timeout=self.drain_timeout)
            if self.socket is not None:
                self.socket.close()
                self.socket = None

        return Deferred.fromCoroutine(stop())
