# -*- test-case-name: tests.e2e.test_reload_under_load -*-
"""The proxy-only master process (``python -m kongtx.workers master``).

A program around :class:`~kongtx.workers.master.WorkerPool`: read the
configuration, bind ``proxy_listen``, run the workers, say when they are ready,
and map the process signals to reloads and stops.  A node does not use it: its
workers are :class:`~kongtx.workers.service.ProxyWorkers`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from kongtx.clock import Clock
from kongtx.workers.control import encode, share_local_counters, worker_command
from kongtx.workers.master import WorkerPool, bind_listener, log, worker_count


async def serve_master(reactor: Any, conf_path: str | None, prefix: str | None) -> None:
    """A proxy-only master: bind ``proxy_listen``, run the workers, reload on SIGHUP.

    SIGHUP re-reads the configuration (a bad one is refused and logged) and rolls
    a new generation of workers; SIGQUIT drains the workers and exits; SIGTERM
    and SIGINT stop them at once.  Prints ``{"op": "ready"}`` once every worker
    accepts (for whoever started it).

    This master runs no DAO and no cluster agent, so nothing invalidates its
    workers' caches: changes made through a node's Admin API reach them only
    after a reload.  Inside a node, :class:`~kongtx.workers.service.ProxyWorkers` with :func:`fan_out`
    is what keeps workers current.
    """
    from kongtx.config import ConfigError
    from kongtx.config_loading import load_config

    config = load_config(conf_path, os.environ, prefix)
    clock = Clock(reactor)
    listen = config.proxy_listen
    sock = bind_listener(listen.host, listen.port)
    count = worker_count(config.nginx_worker_processes)
    share_local_counters(config.prefix, create=True)
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
