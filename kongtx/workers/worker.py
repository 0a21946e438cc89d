# -*- test-case-name: tests.unit.test_workers -*-
"""A worker process's side: adopt the inherited sockets, serve the proxy, obey the master."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.workers.control import FIRST_SOCKET_FD, encode, share_local_counters

log = logger("kongtx.workers")


class WorkerControl(LineOnlyReceiver):
    """The worker's end of the control channel (its stdin and stdout).

    ``handlers``: the other ops this worker obeys (``health``, ``config``),
    each called with the whole message.
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(
        self,
        invalidate: Callable[[list[str]], None],
        flush: Callable[[], None],
        quit: Callable[[float], object],
        handlers: dict[str, Callable[[dict[str, Any]], object]] | None = None,
    ) -> None:
        self._invalidate = invalidate
        self._flush = flush
        self._quit = quit
        self._handlers = dict(handlers or {})
        self.quitting = False

    def send(self, message: dict[str, Any]) -> None:
        """One control line to the master."""
        if self.transport is not None:
            self.transport.write(encode(message))

    def announce_ready(self) -> None:
        """Tell the master this worker accepts connections."""
        self.send({"op": "ready"})

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
        elif isinstance(op, str) and op in self._handlers:
            try:
                self._handlers[op](message)
            except Exception:
                log.failure("control line {op} failed", op=op)

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


class AdoptedEndpoint:
    """A server endpoint whose ``listen`` adopts an inherited listening descriptor."""

    def __init__(self, reactor: Any, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd

    def listen(self, factory: Any) -> Deferred[Any]:
        probe = socket.socket(fileno=os.dup(self.fd))
        family = probe.family
        probe.close()
        port = self.reactor.adoptStreamPort(self.fd, family, factory)
        os.close(self.fd)  # adoptStreamPort duplicated it
        return succeed(port)


def changes_to(send: Callable[[dict[str, Any]], None], origin: str) -> Callable[..., None]:
    """A DAO listener telling the master of each of this worker's commits.

    ``{"op": "changed", "origin": <this worker's store origin>, "keys": [...]}``:
    the master invalidates the keys in its cache (and so in every worker's) and
    publishes the origin's new log rows to the cluster at once.
    """
    from kongtx.invalidation import keys_for

    def on_change(collection: str, _type: str, old: Any, new: Any) -> None:
        send({"op": "changed", "origin": origin, "keys": keys_for(collection, old, new)})

    return on_change


#: seconds between two reports of a worker's counters to its master
STATS_INTERVAL = 1.0
#: seconds a new worker waits for the master's "serve" before it accepts anyway
CATCH_UP_TIMEOUT = 10.0


async def serve_worker(
    reactor: Any, conf_path: str | None, prefix: str | None, sockets: int | list[str]
) -> None:
    """A worker's life: adopt the inherited sockets, serve the proxy until told to quit.

    ``sockets``: the roles of the inherited sockets (a number: that many plain
    ones); a ``proxy_ssl`` socket is served with TLS and the same SNI certificate
    choice as a node's ``proxy_listen_ssl``.  Besides serving, the worker keeps
    in step with its master: invalidations, DB-less configurations and target
    health verdicts come in; its counters (every :data:`STATS_INTERVAL` s and
    once more after draining), its own health verdicts (passive checks) and its
    own commits (:func:`changes_to`) go out.
    """
    from twisted.internet import stdio
    from twisted.python.threadpool import ThreadPool

    from kongtx import invalidation
    from kongtx.balancer.health_state import Source
    from kongtx.balancer.passive_checks import PassiveChecker
    from kongtx.balancer.registry import make_balancers
    from kongtx.cache import Cache
    from kongtx.config_loading import load_config
    from kongtx.dao import DAO
    from kongtx.metrics import Metrics
    from kongtx.plugins.registry import PluginRegistry
    from kongtx.prefix import node_name
    from kongtx.proxy.service import (
        build_pipeline,
        make_proxy_factory,
        make_tls_context,
        sni_warmer,
    )
    from kongtx.proxy.tls import SNIWarmingTLSEndpoint
    from kongtx.store.factory import open_store

    roles = ["proxy"] * sockets if isinstance(sockets, int) else list(sockets)
    config = load_config(conf_path, os.environ, prefix)
    clock = Clock(reactor)
    try:
        share_local_counters(config.prefix, create=False)
    except (OSError, ValueError) as e:  # no master made the table (a worker run alone)
        log.warn("local rate-limiting counts in this process only: {error}", error=e)
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
    declarative: Any = None
    if config.database == "off":  # (kongtx.declarative and YAML only then: memory per worker)
        from kongtx.declarative import DeclarativeState, load_declarative_config

        # the master points declarative_config at the configuration in force
        await load_declarative_config(config, dao)
        declarative = DeclarativeState(dao, cache)
    balancers = make_balancers(config, cache, dao, clock, reactor)
    # Passive checks count this worker's traffic; active probes run in the master only.
    passive = PassiveChecker(balancers.health)
    balancers.outcome_listeners.append(passive.on_outcome)
    passive.start()
    pipeline, routers, runtime = build_pipeline(
        config, dao, cache, registry, clock, reactor, balancers
    )
    metrics = Metrics() if config.status_listen is not None else None
    if metrics is not None:
        observe: Any = metrics.observe
        pipeline.observers.append(observe)
    factories: list[Any] = []
    ports: list[Any] = []
    done: Deferred[None] = Deferred()
    #: fires on the master's "serve": every line it queued at our spawn has been applied
    caught_up: Deferred[None] = Deferred()
    control: WorkerControl

    def serve() -> None:
        if not caught_up.called:
            caught_up.callback(None)

    def report() -> None:
        server: dict[str, int] = {}
        for factory in factories:
            for key, value in factory.stats().items():
                server[key] = server.get(key, 0) + value
        message: dict[str, Any] = {"op": "stats", "server": server}
        if metrics is not None:
            message["metrics"] = metrics.dump()
        control.send(message)

    reporting = clock.looping_call(STATS_INTERVAL, report)

    async def quit(timeout: float) -> None:
        for port in ports:
            # The listening socket is shared with the other workers: close this
            # process's descriptor only; shutdown() would stop it for all of them.
            port._shouldShutdown = False
            await port.stopListening()
        await DeferredList([f.drain(clock, timeout) for f in factories])
        if reporting.running:
            reporting.stop()
        report()  # the last counters, drained requests included
        clock.cancel_all()
        await store.stop()
        threads.stop()
        if not done.called:
            done.callback(None)
        serve()  # a worker told to quit before it served stops waiting for "serve"

    def verdict(upstream_id: str, addr: str, healthy: bool, source: Source) -> None:
        # ours (passive checks) go to the master; the master's come in as "cluster"
        if source != "cluster":
            control.send(
                {"op": "health", "upstream_id": upstream_id, "address": addr, "healthy": healthy}
            )

    def apply_verdict(message: dict[str, Any]) -> None:
        upstream_id, addr, healthy = (
            message.get("upstream_id"),
            message.get("address"),
            message.get("healthy"),
        )
        if isinstance(upstream_id, str) and isinstance(addr, str) and isinstance(healthy, bool):
            balancers.health.set(upstream_id, addr, healthy, "cluster")

    def replace_config(message: dict[str, Any]) -> None:
        document = message.get("document")
        if declarative is not None and isinstance(document, dict):
            Deferred.fromCoroutine(declarative.replace(document)).addErrback(
                lambda f: log.failure("the master's declarative configuration failed here", f)
            )

    balancers.health.add_listener(verdict)
    dao.add_listener(changes_to(lambda m: control.send(m), store.origin))
    control = WorkerControl(
        lambda keys: invalidation.apply(cache, keys),
        cache.flush,
        lambda timeout: Deferred.fromCoroutine(quit(timeout)),
        {
            "health": apply_verdict,
            "config": replace_config,
            "serve": lambda _: serve(),
        },
    )
    stdio.StandardIO(control, reactor=reactor)
    # What the master sent at our spawn (the health verdicts in force) is applied before the
    # first connection is accepted; a master that sends no "serve" is not waited for long.
    timeout = clock.call_later(CATCH_UP_TIMEOUT, serve)
    await caught_up
    if timeout.active():
        timeout.cancel()
    if control.quitting:  # told to leave (or the master left) before serving
        await done
        return
    tls = None
    for offset, role in enumerate(roles):
        endpoint: Any = AdoptedEndpoint(reactor, FIRST_SOCKET_FD + offset)
        if role == "proxy_ssl":
            if tls is None:
                tls = make_tls_context(config, routers, runtime)
            endpoint = SNIWarmingTLSEndpoint(endpoint, tls, sni_warmer(routers, runtime), clock)
        factory = make_proxy_factory(config, pipeline, clock)
        factories.append(factory)
        port = await endpoint.listen(factory)
        accept_one_at_a_time(port)
        ports.append(port)

    from kongtx.gc_tuning import tune_after_startup

    tune_after_startup()  # what start-up built is never rescanned (kongtx.gc_tuning)
    control.announce_ready()
    await done
