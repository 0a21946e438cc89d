# -*- test-case-name: tests.unit.test_workers -*-
"""The master's side: the listening socket, spawning and restarting workers, reloads, fan-out.

:class:`WorkerPool` is used both by a node (through
:class:`~kongtx.workers.service.ProxyWorkers`) and by the proxy-only master
(:func:`kongtx.workers.proxy_master.serve_master`, ``python -m kongtx.workers master``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.workers.control import (
    FIRST_SOCKET_FD,
    encode,
)

if TYPE_CHECKING:
    from kongtx.cache import Cache

log = logger("kongtx.workers")

#: A worker that dies sooner than this after its start waits ``restart_delay``.
YOUNG = 5.0


def worker_count(setting: int | str, cpus: int | None = None) -> int:
    """``nginx_worker_processes``: ``auto`` is one per core, else the number."""
    if setting == "auto":
        return max(1, cpus if cpus is not None else (os.cpu_count() or 1))
    return max(1, int(setting))


class WorkerFailed(Exception):
    """A worker could not start (it exited before it accepted connections)."""


class WorkerProcess(ProcessProtocol):
    """The master's handle on one worker process."""

    def __init__(self, pool: WorkerPool, generation: int, started: float) -> None:
        self.pool = pool
        self.generation = generation
        self.started = started
        #: fires when the worker accepts (never errbacks: see ``exited``)
        self.ready: Deferred[None] = Deferred()
        #: fires when the process is gone (never errbacks)
        self.exited: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.retiring = False
        self._buffer = b""
        self._log_buffer = b""

    @property
    def pid(self) -> int | None:
        transport: Any = self.transport
        return getattr(transport, "pid", None)

    def send(self, message: dict[str, Any]) -> None:
        transport: Any = self.transport
        if transport is not None and not self.exited.called:
            transport.writeToChild(0, encode(message))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self._log_lines(data)
            return
        if childFD != 1:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("op") == "ready":
                if not self.ready.called:
                    self.ready.callback(None)
            else:
                self.pool._message(self, message)

    def _log_lines(self, data: bytes) -> None:
        """The worker's log (its stderr) goes to the master's, a daemon's log file included."""
        self._log_buffer += data
        lines = self._log_buffer.split(b"\n")
        self._log_buffer = lines.pop()
        if len(self._log_buffer) > 65536:  # a line without end: cut it
            lines.append(self._log_buffer)
            self._log_buffer = b""
        for line in lines:
            if line.strip():
                text = line.decode("utf-8", "replace")
                log.info("worker {pid}: {line}", pid=self.pid, line=text)

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        if not self.exited.called:
            self.exited.callback(None)
        self.pool._ended(self, reason)


class WorkerPool:
    """Spawns, restarts, reloads and stops the workers; fans messages out to them."""

    def __init__(
        self,
        spawner: IReactorProcess,
        clock: Clock,
        command: Sequence[str],
        sockets: Sequence[int],
        count: int,
        env: dict[str, str] | None = None,
        restart_delay: float = 1.0,
    ) -> None:
        self._spawner = spawner
        self._clock = clock
        self.command = list(command)
        self.sockets = list(sockets)
        self.count = count
        self.env = dict(os.environ if env is None else env)
        self.restart_delay = restart_delay
        self.generation = 0
        self.workers: list[WorkerProcess] = []
        self.running = False
        self.restarts = 0
        #: called with each worker just spawned (its stdin already open: bring it up to date)
        self.on_spawn: list[Callable[[WorkerProcess], None]] = []
        #: called with (worker, message) for each control line other than ``ready``
        self.on_message: list[Callable[[WorkerProcess, dict[str, Any]], None]] = []
        #: called with each worker that exited
        self.on_exit: list[Callable[[WorkerProcess], None]] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Deferred[None]:
        """Spawn the first generation; fires once every worker accepts."""
        self.running = True
        self.generation = 1
        return self._all_ready([self._spawn(1) for _ in range(self.count)])

    def reload(
        self, command: Sequence[str] | None = None, sockets: Sequence[int] | None = None
    ) -> Deferred[None]:
        """New generation up and accepting first, then the old one drains and exits.

        ``sockets``: the new generation's listening descriptors (a moved
        ``proxy_listen``); when it cannot start, the previous ones are kept.
        """
        previous = (self.command, self.sockets)
        if command is not None:
            self.command = list(command)
        if sockets is not None:
            self.sockets = list(sockets)
        old = [w for w in self.workers if not w.retiring]
        self.generation += 1
        fresh = [self._spawn(self.generation) for _ in range(self.count)]

        async def roll() -> None:
            try:
                await self._all_ready(fresh)
            except Exception:
                # The new generation cannot serve: keep the old one, drop the new.
                for worker in fresh:
                    self._retire(worker, graceful=False)
                self.generation -= 1
                self.command, self.sockets = previous
                raise
            await self._retire_all(old, graceful=True)

        return Deferred.fromCoroutine(roll())

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> Deferred[None]:
        """Stop every worker (``graceful``: let them drain up to ``timeout`` seconds)."""
        self.running = False
        return Deferred.fromCoroutine(self._retire_all(list(self.workers), graceful, timeout))

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every live worker (cache invalidations)."""
        for worker in self.workers:
            worker.send(message)

    def invalidate(self, keys: Sequence[str]) -> None:
        """Fan an invalidation out (``kongtx.invalidation.apply`` semantics)."""
        if keys:
            self.broadcast({"op": "invalidate", "keys": list(keys)})

    # ------------------------------------------------------------ internals

    def _spawn(self, generation: int) -> WorkerProcess:
        worker = WorkerProcess(self, generation, self._clock.seconds())
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for offset, fd in enumerate(self.sockets):
            child_fds[FIRST_SOCKET_FD + offset] = fd
        self._spawner.spawnProcess(
            worker,
            self.command[0],
            self.command,
            env=self.env,
            childFDs=child_fds,
        )
        self.workers.append(worker)
        for hook in list(self.on_spawn):
            try:
                hook(worker)
            except Exception:
                log.failure("worker spawn hook {hook!r} failed", hook=hook)
        # what the hooks sent is applied before the worker accepts a connection
        worker.send({"op": "serve"})
        return worker

    def _message(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        for hook in list(self.on_message):
            try:
                hook(worker, message)
            except Exception:
                log.failure("worker message hook {hook!r} failed", hook=hook)

    def _all_ready(self, workers: list[WorkerProcess]) -> Deferred[None]:
        """Fires when every one of ``workers`` accepts; fails if one exits before."""
        result: Deferred[None] = Deferred()
        pending = set(workers)

        def one_ready(_: object, worker: WorkerProcess) -> None:
            pending.discard(worker)
            if not pending and not result.called:
                result.callback(None)

        def one_exited(_: object, worker: WorkerProcess) -> None:
            if worker.retiring:
                one_ready(None, worker)  # stopped on purpose: nothing to wait for
            elif not worker.ready.called and not result.called:
                why = worker.reason.getErrorMessage() if worker.reason else "?"
                result.errback(Failure(WorkerFailed(f"a worker exited before it was ready: {why}")))

        for worker in workers:
            worker.ready.addCallback(one_ready, worker)
            worker.exited.addCallback(one_exited, worker)
        if not workers:
            result.callback(None)
        return result

    def _retire(self, worker: WorkerProcess, graceful: bool, timeout: float = 30.0) -> None:
        worker.retiring = True
        if worker.exited.called:
            return
        if graceful:
            worker.send({"op": "quit", "timeout": timeout})
            # A worker that does not leave after its drain timeout is killed.
            self._clock.call_later(timeout + 5.0, self._kill, worker)
        else:
            self._kill(worker)

    async def _retire_all(
        self, workers: list[WorkerProcess], graceful: bool, timeout: float = 30.0
    ) -> None:
        for worker in workers:
            self._retire(worker, graceful, timeout)
        await DeferredList([w.exited for w in workers])

    def _kill(self, worker: WorkerProcess) -> None:
        if worker.exited.called:
            return
        transport: Any = worker.transport
        if transport is not None:
            try:
                transport.signalProcess("KILL")
            except Exception:
                log.failure("could not kill worker {pid}", pid=worker.pid)

    def _ended(self, worker: WorkerProcess, reason: Failure) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        for hook in list(self.on_exit):
            try:
                hook(worker)
            except Exception:
                log.failure("worker exit hook {hook!r} failed", hook=hook)
        if worker.retiring or not self.running or worker.generation != self.generation:
            return
        log.warn(
            "worker {pid} exited ({reason}); starting another",
            pid=worker.pid,
            reason=reason.getErrorMessage(),
        )
        self.restarts += 1
        young = self._clock.seconds() - worker.started < YOUNG
        if young:
            self._clock.call_later(self.restart_delay, self._replace, worker.generation)
        else:
            self._replace(worker.generation)

    def _replace(self, generation: int) -> None:
        if self.running and generation == self.generation:
            alive = [w for w in self.workers if w.generation == generation and not w.retiring]
            if len(alive) < self.count:
                self._spawn(generation)


class _WorkerFanOut:
    """A cache invalidation listener that sends each invalidation on to a pool's workers."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def invalidate(self, key: str) -> None:
        self.pool.invalidate([key])

    def invalidate_prefix(self, prefix: str) -> None:
        self.pool.invalidate([prefix + "*"])

    def flush(self) -> None:
        self.pool.broadcast({"op": "flush"})


def fan_out(cache: Cache, pool: WorkerPool) -> Callable[[], None]:
    """Make every invalidation of the master's ``cache`` reach the workers too.

    The master's cache is invalidated from three places (its DAO listener, the
    cluster stream, ``DELETE /cache``), all through ``invalidate``,
    ``invalidate_prefix`` and ``flush``, which tell the cache's invalidation
    listeners: one listener covers them all without each caller knowing about
    workers.  Returns what removes it (the node serves the proxy itself again).
    """
    listener = _WorkerFanOut(pool)
    cache.add_invalidation_listener(listener)
    return lambda: cache.remove_invalidation_listener(listener)


def bind_listener(host: str, port: int, backlog: int = 511) -> socket.socket:
    """The master's listening socket, bound and listening, for workers to inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), True)
    return sock
