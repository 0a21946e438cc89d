# -*- test-case-name: tests.unit.test_workers -*-
"""A worker process's side: adopt the inherited sockets, serve the proxy, obey the master."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.workers.control import FIRST_SOCKET_FD, encode

log = logger("kongtx.workers")


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
