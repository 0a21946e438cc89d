# -*- test-case-name: tests.e2e.test_node -*-
"""KongNode: one gateway node's service tree, started in order (DESIGN.md §1).

Order matters: the store must be connected and migrated before any listener
accepts a request, and a node that cannot reach its store must not half-start.
Twisted's MultiService starts children blindly, so the listeners are created
and started only once the asynchronous start-up (prefix, store, migrations,
plugin check) has succeeded; if it fails, the reason is logged as one line and
the process exits non-zero.

The node also gives the Admin API its ``NodeInfo`` view (name, members, server
statistics) and the process signals Kong's CLI relies on: SIGHUP re-reads and
applies the configuration (``kong reload``), SIGQUIT drains in-flight requests
and exits (``kong quit``), SIGTERM stops at once (``kong stop``).

With ``nginx_worker_processes`` >= 2 the node is a master: the proxy sockets are
served by worker processes (kongtx.workers.service), which a reload replaces by a
new generation, ``kong quit`` drains and ``kong stop`` stops.  A reload that
changes the count between 1 and more hands the proxy sockets over between the
node and its workers without closing them (kongtx.node_workers).

By concern, beside this module: ``node_sites`` (what the listeners serve: the Admin
site, the proxy pipeline, the service of each listening role), ``node_balancing``
(balancers, health checks, health shared with the cluster), ``node_workers`` (the
proxy served by worker processes, their writes published to the cluster) and
``node_view`` (``NodeView``, the node as the Admin API sees it).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, DeferredLock
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from kongtx import invalidation, log
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.config import Config, ConfigError
from kongtx.config_loading import load_config
from kongtx.dao import DAO
from kongtx.http.site import TrackingSite
from kongtx.listeners import NodeListeners, maybe_await
from kongtx.node_balancing import share_health, start_balancing
from kongtx.node_sites import build_sites, listener_service
from kongtx.node_workers import reload_workers, start_workers
from kongtx.plugins.registry import PluginRegistry
from kongtx.prefix import node_name, prepare_prefix
from kongtx.store.factory import migration_identifiers, open_store
from kongtx.store.interface import IStore, StoreUnavailable
from kongtx.store.migrations import load_migrations
from kongtx.workers.stats import SummedMetrics, WorkerStats

if TYPE_CHECKING:
    from kongtx.balancer.health import HealthChecks
    from kongtx.balancer.registry import Balancers
    from kongtx.cluster.health_gossip import HealthGossip
    from kongtx.cluster.service import ClusterService
    from kongtx.plugins.runtime import PluginRuntime
    from kongtx.proxy.context import RouterSource
    from kongtx.proxy.pipeline import ProxyPipeline
    from kongtx.proxy.tls import ProxyTLSContextFactory
    from kongtx.workers.service import ProxyWorkers


class StartupError(Exception):
    """The node cannot start; the message is the one line operators see."""


class KongNode(MultiService):
    """The root service of a node."""

    log = log.logger()

    def __init__(self, config: Config, reactor: Any, conf_path: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.conf_path = conf_path
        self.reactor = reactor
        self.clock = Clock(reactor)
        self.hostname = socket.gethostname()
        self.node_name = ""
        self.cache = Cache(self.clock, config.mem_cache_size)
        self.store: IStore | None = None
        self.dao: DAO | None = None
        self.registry: PluginRegistry | None = None
        self.cluster: ClusterService | None = None
        #: upstreams/targets load balancing and their health (issue 9), built with the DAO
        self.balancers: Balancers | None = None
        self.health_checks: HealthChecks | None = None
        self.health_gossip: HealthGossip | None = None
        self.sites: list[TrackingSite] = []
        #: the listening sockets by role (admin, proxy, proxy_ssl, status)
        self.listeners = NodeListeners(self, partial(listener_service, self))
        #: the proxy's request path, built once and kept across reloads
        self.pipeline: ProxyPipeline | None = None
        self.routers: RouterSource | None = None
        self.plugin_runtime: PluginRuntime | None = None
        #: proxy_ssl's TLS context, made with the first proxy_ssl listener
        self.proxy_tls: ProxyTLSContextFactory | None = None
        #: the counters of the proxy's worker processes, those gone included (kept
        #: across reloads that change their number, 0 included)
        self.worker_stats = WorkerStats()
        #: request metrics, fed by the proxy pipelines while status_listen is on
        #: (this process's, plus its workers' reports)
        self.metrics = SummedMetrics(self.worker_stats)
        #: the proxy's worker processes (``nginx_worker_processes`` >= 2), else None
        self.workers: ProxyWorkers | None = None
        #: this process's proxy listeners' factories still draining after workers took over
        self.draining_proxy: list[Any] = []
        #: DB-less: the configuration last posted (``POST /config``), for workers to load
        self.dbless_document: Mapping[str, Any] | None = None
        self._reloading = DeferredLock()
        self._threads = ThreadPool(minthreads=0, maxthreads=4, name="kongtx-cpu")
        self.started: Deferred[None] = Deferred()
        self.exit_code = 0

    # ------------------------------------------------------------ start/stop

    def startService(self) -> None:
        super().startService()
        log.set_level(self.config.log_level)
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)
        d.chainDeferred(self.started)

    async def _start(self) -> None:
        prepare_prefix(self.config)
        self.node_name = node_name(self.config)
        self._threads.start()
        self.registry = PluginRegistry.load(self.config.custom_plugins)
        self.store = open_store(self.config, self.reactor, self.clock, self.node_name)
        await self.store.start()
        dbless = self.config.database == "off"
        if not dbless:
            identifiers = migration_identifiers(self.registry)
            ran = await self.store.migrate(load_migrations(self.config.database, identifiers))
            for name in ran:
                self.log.info("migrated {migration}", migration=name)
        self.dao = DAO(self.store, self.registry, self.clock, self.run_in_thread)
        self.dao.add_listener(invalidation.listener(self.cache))
        if dbless:
            # DB-less: the configuration is the declarative file; each node stands alone.
            from kongtx.declarative import load_declarative_config

            await load_declarative_config(self.config, self.dao)
        await self._check_plugins_in_use()
        start_balancing(self)
        if not dbless:
            await self._start_cluster()
        build_sites(self)
        await start_workers(self)
        await self.listeners.start(self.config)
        self._install_signals()
        self.log.info(
            "kongtx node {name} started on {database} (admin {admin}, proxy {proxy})",
            name=self.node_name,
            database=self.config.database,
            admin=f"{self.config.admin_listen.host}:{self.config.admin_listen.port}",
            proxy=f"{self.config.proxy_listen.host}:{self.config.proxy_listen.port}",
        )

    async def _start_cluster(self) -> None:
        """Gossip, invalidation stream and ``nodes`` row (kongtx.cluster), before listeners.

        Kong 0.9 refused to start when Serf could not bind; so do we, with the reason.
        """
        from kongtx.cluster.service import ClusterService

        assert self.store is not None
        self.cluster = ClusterService(
            self.config, self.store, self.dao, self.cache, self.clock, self.reactor, self.node_name
        )
        share_health(self)  # before joining: the join replays recent events, health included
        try:
            await self.cluster.start()
        except CannotListenError as e:
            await self.cluster.stop()
            raise StartupError(f"could not start the cluster agent: {e}") from e

    async def _check_plugins_in_use(self) -> None:
        """Kong refuses to start when the datastore uses a plugin this node lacks."""
        assert self.dao is not None and self.registry is not None
        for row in await self.dao.find_all("plugins", {}):
            if self.registry.get(row["name"]) is None:
                raise StartupError(f"{row['name']} plugin is in use but not enabled")

    def _start_failed(self, failure: Any) -> None:
        self.log.critical("could not start kongtx: {reason}", reason=failure.getErrorMessage())
        # an unreachable or refusing datastore is said in one line (Kong: "[postgres
        # error] ..."); only an unexpected failure is worth its traceback
        if not failure.check(StartupError, ConfigError, StoreUnavailable):
            self.log.failure("start-up failure", failure)
        self.exit_code = 1
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._stop())
        return d

    async def _stop(self) -> None:
        if self.health_checks is not None:
            self.health_checks.stop()
        if self.health_gossip is not None:
            self.health_gossip.stop()
        if self.cluster is not None:
            try:
                await self.cluster.stop()
            except Exception:
                self.log.failure("cluster leave failed")
        if self.workers is not None:
            self.workers.graceful = False  # kong stop: at once (kong quit drained them already)
        await maybe_await(super().stopService())
        self.clock.cancel_all()
        if self.store is not None:
            await self.store.stop()
        if self._threads.started:
            self._threads.stop()

    # ------------------------------------------------------------- signals

    def _install_signals(self) -> None:
        """SIGHUP = reload, SIGQUIT = graceful quit (twistd already maps SIGTERM/SIGINT)."""
        if not hasattr(signal, "SIGQUIT") or self.reactor is not _global_reactor():
            return

        def on(signum: int, fn: Any) -> None:
            signal.signal(signum, lambda *_: self.reactor.callFromThread(fn))

        on(signal.SIGHUP, lambda: Deferred.fromCoroutine(self.reload()))
        on(signal.SIGQUIT, lambda: Deferred.fromCoroutine(self.quit()))

    async def reload(self) -> None:
        """Re-read and validate the configuration, then apply it.

        A bad file leaves the running node untouched (the error is logged).  Only
        the listeners whose address changed move, each new socket bound before the
        old one closes (kongtx.listeners); proxy settings, the default certificate
        and the Admin API's view of the configuration apply in place; the proxy's
        workers are replaced, started or retired (kongtx.node_workers).  Reloads
        run one after the other.
        """
        await self._reloading.acquire()
        try:
            await self._reload()
        finally:
            self._reloading.release()

    async def _reload(self) -> None:
        from kongtx.proxy.service import apply_proxy_settings, default_certificate

        try:
            new = load_config(self.conf_path, os.environ, self.config.prefix)
        except ConfigError as e:
            for line in e.errors:
                self.log.error("reload refused: {error}", error=line)
            return
        old, self.config = self.config, new
        log.set_level(new.log_level)
        self.cache.max_bytes = new.mem_cache_size
        for site in self.sites:
            resource: Any = site.resource
            if hasattr(resource, "config"):
                resource.config = new
        if self.pipeline is not None:
            apply_proxy_settings(self.pipeline, self._proxy_sites(), new)
        if self.proxy_tls is not None and new.ssl:
            try:
                self.proxy_tls.load_certificate(*default_certificate(new))
            except Exception as e:
                self.log.error("reload: the ssl certificate did not load: {error}", error=e)
        if old.proxy_frontend != new.proxy_frontend:
            self.log.warn("reload: proxy_frontend changes apply on restart")
        moved = await self.listeners.apply(new)
        moved += await reload_workers(self, old, new)
        self.log.info(
            "configuration reloaded{moved}",
            moved=f" (listeners moved: {', '.join(moved)})" if moved else "",
        )

    async def quit(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish, then stop the process."""
        self.log.info("graceful shutdown: draining connections")
        sites = list(self.sites) + self._proxy_sites()  # the proxy's requests finish too
        await self.listeners.stop()
        drains = [site.drain(self.clock, timeout) for site in sites + self.draining_proxy]
        if self.workers is not None:
            drains.append(self.workers.stop(graceful=True, timeout=timeout))
        await DeferredList(drains)
        self.reactor.stop()

    def server_stats(self) -> dict[str, int]:
        """nginx stub_status-style counters summed over every listener."""
        total: dict[str, int] = {}
        for site in self.sites + self._proxy_sites() + self.draining_proxy:
            for key, value in site.stats().items():
                total[key] = total.get(key, 0) + value
        for key, value in self.worker_stats.server_stats().items():
            total[key] = total.get(key, 0) + value
        return total

    def _proxy_sites(self) -> list[Any]:
        """The proxy listeners' factories: a ``ProxySite`` or a ``FastProxyFactory``.

        Both count like ``TrackingSite`` (``stats()``) and drain (``drain()``).
        """
        found = []
        for service in self.listeners.services():
            factory = getattr(service, "factory", None) or getattr(
                getattr(service, "endpoint", None), "factory", None
            )
            if (
                hasattr(factory, "stats")
                and hasattr(factory, "drain")
                and factory not in self.sites
            ):
                found.append(factory)
        return found

    # ------------------------------------------------------------- helpers

    def run_in_thread(self, fn: Any) -> Deferred[Any]:
        """Run CPU-heavy work (password KDFs) off the reactor thread."""
        return deferToThreadPool(self.reactor, self._threads, fn)


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor
