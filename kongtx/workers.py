# -*- test-case-name: tests.unit.test_workers -*-
"""Worker processes for the proxy: one per core, as nginx's ``worker_processes``.

CPython runs one request at a time per process, so a node uses more than one
core only with more processes.  The *master* (the node process) owns the
listening proxy socket, runs the Admin API and the cluster agent, and spawns
``nginx_worker_processes`` workers (``auto``: one per core).  Each worker
inherits the listening socket (``childFDs``) and adopts it
(``reactor.adoptStreamPort``): the kernel hands every new connection to one of
the processes blocked in ``accept``.  A worker opens its own datastore
connection and cache, and serves the proxy with the same pipeline as the node
(``kongtx.proxy.service``).

Master and worker talk over the worker's stdin/stdout, one JSON object per
line:

* master -> worker: ``{"op": "invalidate", "keys": [...]}`` (what the master's
  DAO listener or cluster stream invalidated: every worker drops the same keys,
  ``*``-suffixed ones as prefixes), ``{"op": "flush"}``, and
  ``{"op": "quit", "timeout": s}`` (stop accepting, drain, exit);
* worker -> master: ``{"op": "ready"}`` once it accepts.

A worker that dies is restarted (after ``restart_delay`` when it died young, so
a worker that cannot start does not spin).  :meth:`WorkerPool.reload` is the
zero-failure reload: it starts a whole new generation, waits until every new
worker accepts, then tells the old ones to quit; they stop accepting (the
listening socket stays open in the others, so no connection is refused),
finish their in-flight requests and exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.log import logger

log = logger("kongtx.workers")

#: The first inherited listening socket's descriptor in a worker (0-2 are stdio).
FIRST_SOCKET_FD = 3
#: A worker that dies sooner than this after its start waits ``restart_delay``.
YOUNG = 5.0


def worker_count(setting: int | str, cpus: int | None = None) -> int:
    """``nginx_worker_processes``: ``auto`` is one per core, else the number."""
    if setting == "auto":
        return max(1, cpus if cpus is not None else (os.cpu_count() or 1))
    return max(1, int(setting))


def encode(message: dict[str, Any]) -> bytes:
    """One control line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


# --------------------------------------------------------------------- master side


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

    @property
    def pid(self) -> int | None:
        transport: Any = self.transport
        return getattr(transport, "pid", None)

    def send(self, message: dict[str, Any]) -> None:
        transport: Any = self.transport
        if transport is not None and not self.exited.called:
            transport.writeToChild(0, encode(message))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != 1:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("op") == "ready":
                if not self.ready.called:
                    self.ready.callback(None)

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

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Deferred[None]:
        """Spawn the first generation; fires once every worker accepts."""
        self.running = True
        self.generation = 1
        return self._all_ready([self._spawn(1) for _ in range(self.count)])

    def reload(self, command: Sequence[str] | None = None) -> Deferred[None]:
        """New generation up and accepting first, then the old one drains and exits."""
        if command is not None:
            self.command = list(command)
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
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: 2}
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
        return worker

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


def fan_out(cache: Any, pool: WorkerPool) -> None:
    """Make every invalidation of the master's ``cache`` reach the workers too.

    The master's cache is invalidated from three places (its DAO listener, the
    cluster stream, ``DELETE /cache``), all through ``invalidate``,
    ``invalidate_prefix`` and ``flush``; wrapping those three on this one
    instance covers them all without each caller knowing about workers.
    """
    invalidate, invalidate_prefix, flush = cache.invalidate, cache.invalidate_prefix, cache.flush

    def invalidate_everywhere(key: str) -> None:
        invalidate(key)
        pool.invalidate([key])

    def invalidate_prefix_everywhere(prefix: str) -> None:
        invalidate_prefix(prefix)
        pool.invalidate([prefix + "*"])

    def flush_everywhere() -> None:
        flush()
        pool.broadcast({"op": "flush"})

    cache.invalidate = invalidate_everywhere
    cache.invalidate_prefix = invalidate_prefix_everywhere
    cache.flush = flush_everywhere


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


# --------------------------------------------------------------------- worker side


class WorkerControl(LineOnlyReceiver):
    """The worker's end of the control channel (its stdin and stdout)."""

    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(
        self,
        invalidate: Callable[[list[str]], None],
        flush: Callable[[], None],
        quit: Callable[[float], object],
    ) -> None:
        self._invalidate = invalidate
        self._flush = flush
        self._quit = quit
        self.quitting = False

    def announce_ready(self) -> None:
        """Tell the master this worker accepts connections."""
        if self.transport is not None:
            self.transport.write(encode({"op": "ready"}))

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warn("bad control line from the master: {line!r}", line=line[:200])
            return
        if not isinstance(message, dict):
            return
        op = message.get("op")
        if op == "invalidate":
            keys = message.get("keys")
            if isinstance(keys, list):
                self._invalidate([k for k in keys if isinstance(k, str)])
        elif op == "flush":
            self._flush()
        elif op == "quit" and not self.quitting:
            self.quitting = True
            timeout = message.get("timeout", 30.0)
            self._quit(float(timeout) if isinstance(timeout, int | float) else 30.0)

    def connectionLost(self, reason: Failure = Failure(ProcessDone(0))) -> None:
        # The master is gone (its end of the pipe closed): drain and leave too.
        if not self.quitting:
            self.quitting = True
            self._quit(5.0)


def accept_one_at_a_time(port: Any) -> None:
    """Make ``port`` accept at most one connection per readiness event.

    Twisted's port accepts up to 100 (and growing) connections each time the
    socket is readable; with the listening socket shared by several workers the
    first one awake takes a whole burst (wrk's 50 connections all landed in one
    worker).  One accept per wake-up lets the workers share new connections,
    the least busy one (first back in ``epoll_wait``) taking most, as nginx's
    workers do without ``accept_mutex``.
    """
    read = port.doRead

    def do_read() -> Any:
        port.numberAccepts = 1
        return read()

    port.doRead = do_read


async def serve_worker(
    reactor: Any, conf_path: str | None, prefix: str | None, sockets: int
) -> None:
    """A worker's life: adopt the inherited sockets, serve the proxy until told to quit."""
    from twisted.internet import stdio
    from twisted.python.threadpool import ThreadPool

    from kongtx import invalidation
    from kongtx.cache import Cache
    from kongtx.config import load_config
    from kongtx.dao import DAO
    from kongtx.plugins.registry import PluginRegistry
    from kongtx.prefix import node_name
    from kongtx.proxy.service import build_pipeline, make_proxy_factory
    from kongtx.store.factory import open_store

    config = load_config(conf_path, os.environ, prefix)
    clock = Clock(reactor)
    cache = Cache(clock, config.mem_cache_size)
    registry = PluginRegistry.load(config.custom_plugins)
    store = open_store(config, reactor, clock, f"{node_name(config)}-worker-{os.getpid()}")
    await store.start()
    threads = ThreadPool(minthreads=0, maxthreads=4, name="kongtx-worker-cpu")
    threads.start()

    def run_in_thread(fn: Any) -> Deferred[Any]:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(reactor, threads, fn)

    dao = DAO(store, registry, clock, run_in_thread)
    dao.add_listener(invalidation.listener(cache))
    pipeline, _, _ = build_pipeline(config, dao, cache, registry, clock, reactor)
    factories = []
    ports = []
    for fd in range(FIRST_SOCKET_FD, FIRST_SOCKET_FD + sockets):
        probe = socket.socket(fileno=os.dup(fd))
        family = probe.family
        probe.close()
        factory = make_proxy_factory(config, pipeline, clock)
        factories.append(factory)
        port = reactor.adoptStreamPort(fd, family, factory)
        accept_one_at_a_time(port)
        ports.append(port)
        os.close(fd)  # adoptStreamPort duplicated it

    done: Deferred[None] = Deferred()

    async def quit(timeout: float) -> None:
        for port in ports:
            # The listening socket is shared with the other workers: close this
            # process's descriptor only; shutdown() would stop it for all of them.
            port._shouldShutdown = False
            await port.stopListening()
        await DeferredList([f.drain(clock, timeout) for f in factories])
        clock.cancel_all()
        await store.stop()
        threads.stop()
        if not done.called:
            done.callback(None)

    control = WorkerControl(
        lambda keys: invalidation.apply(cache, keys),
        cache.flush,
        lambda timeout: Deferred.fromCoroutine(quit(timeout)),
    )
    stdio.StandardIO(control, reactor=reactor)
    control.announce_ready()
    await done


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


async def serve_master(reactor: Any, conf_path: str | None, prefix: str | None) -> None:
    """A proxy-only master: bind ``proxy_listen``, run the workers, reload on SIGHUP.

    SIGHUP re-reads the configuration (a bad one is refused and logged) and rolls
    a new generation of workers; SIGQUIT drains the workers and exits; SIGTERM
    and SIGINT stop them at once.  Prints ``{"op": "ready"}`` once every worker
    accepts (for whoever started it).

    This master runs no DAO and no cluster agent, so nothing invalidates its
    workers' caches: changes made through a node's Admin API reach them only
    after a reload.  Inside a node, :class:`ProxyWorkers` with :func:`fan_out`
    is what keeps workers current.
    """
    from kongtx.config import ConfigError, load_config

    config = load_config(conf_path, os.environ, prefix)
    clock = Clock(reactor)
    listen = config.proxy_listen
    sock = bind_listener(listen.host, listen.port)
    count = worker_count(config.nginx_worker_processes)
    pool = WorkerPool(
        reactor, clock, worker_command(1, conf_path, config.prefix), [sock.fileno()], count
    )
    await pool.start()
    sys.stdout.write(encode({"op": "ready", "workers": count}).decode())
    sys.stdout.flush()
    done: Deferred[None] = Deferred()

    async def reload() -> None:
        try:
            load_config(conf_path, os.environ, prefix)
        except ConfigError as e:
            for line in e.errors:
                log.error("reload refused: {error}", error=line)
            return
        await pool.reload()
        log.info("workers reloaded (generation {generation})", generation=pool.generation)

    async def stop(graceful: bool) -> None:
        await pool.stop(graceful=graceful)
        if not done.called:
            done.callback(None)

    def on(signum: int, fn: Callable[[], object]) -> None:
        signal.signal(signum, lambda *_: reactor.callFromThread(fn))

    on(signal.SIGHUP, lambda: Deferred.fromCoroutine(reload()))
    on(signal.SIGQUIT, lambda: Deferred.fromCoroutine(stop(True)))
    on(signal.SIGTERM, lambda: Deferred.fromCoroutine(stop(False)))
    on(signal.SIGINT, lambda: Deferred.fromCoroutine(stop(False)))
    await done
    sock.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m kongtx.workers SOCKETS|master [conf_path] [prefix]``.

    ``SOCKETS`` (a number): one worker, as the master spawns it; ``master``: a
    proxy-only master with its workers (:func:`serve_master`).
    """
    from twisted.internet import reactor as global_reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    args = sys.argv[1:] if argv is None else argv
    mode = args[0]
    conf_path = args[1] if len(args) > 1 and args[1] else None
    prefix = args[2] if len(args) > 2 and args[2] else None
    # stdout is the control channel: logs go to stderr (the master's log).
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    reactor: Any = global_reactor
    exit_code = [0]

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            log.failure("worker failed", result)
            exit_code[0] = 1
        reactor.stop()

    if mode == "master":
        job = lambda: serve_master(reactor, conf_path, prefix)  # noqa: E731
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides when we stop
        job = lambda: serve_worker(reactor, conf_path, prefix, int(mode))  # noqa: E731
    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(job()).addBoth(finished))
    reactor.run()
    sys.exit(exit_code[0])


def worker_command(sockets: int, conf_path: str | None, prefix: str | None) -> list[str]:
    """The argv the master spawns a worker with (this interpreter, this module)."""
    return [sys.executable, "-m", "kongtx.workers", str(sockets), conf_path or "", prefix or ""]


if __name__ == "__main__":
    main()
