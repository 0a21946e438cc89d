# -*- test-case-name: tests.unit.test_workers -*-
"""Worker processes for the proxy: one per core, as nginx's ``worker_processes``.

CPython runs one request at a time per process, so a node uses more than one
core only with more processes.  The *master* (the node process) owns the
listening proxy sockets (``proxy_listen``, and ``proxy_listen_ssl`` served with
TLS), runs the Admin API and the cluster agent, and spawns
``nginx_worker_processes`` workers (``auto``: one per core).  Each worker
inherits the listening sockets (``childFDs``) and adopts them
(``reactor.adoptStreamPort``): the kernel hands every new connection to one of
the processes blocked in ``accept``.  A worker opens its own datastore
connection and cache, and serves the proxy with the same pipeline as the node
(``kongtx.proxy.service``).

Master and worker talk over the worker's stdin/stdout, one JSON object per
line:

* master -> worker: ``{"op": "invalidate", "keys": [...]}`` (what the master's
  DAO listener or cluster stream invalidated: every worker drops the same keys,
  ``*``-suffixed ones as prefixes), ``{"op": "flush"}``,
  ``{"op": "health", "upstream_id", "address", "healthy"}`` (a target verdict),
  ``{"op": "config", "document": {...}}`` (DB-less ``POST /config``),
  ``{"op": "serve"}`` (sent right after what a new worker must know first: it
  adopts the sockets only then) and ``{"op": "quit", "timeout": s}`` (stop
  accepting, drain, exit);
* worker -> master: ``{"op": "ready"}`` once it accepts, ``{"op": "stats",
  "server": {...}, "metrics": {...}}`` every second and after draining,
  ``{"op": "health", ...}`` for what its passive checks decided, and
  ``{"op": "changed", "origin", "keys"}`` after each commit of its own DAO (plugins
  write on the proxy path: OAuth2 codes and tokens...): the master invalidates the
  keys (and so every worker does) and publishes the worker's new log rows to the
  cluster at once (``InvalidationStream.publish``).

A worker's stderr is a pipe too: the master logs its lines.

A worker that dies is restarted (after ``restart_delay`` when it died young, so
a worker that cannot start does not spin).  :meth:`~kongtx.workers.master.WorkerPool.reload` is the
zero-failure reload: it starts a whole new generation, waits until every new
worker accepts, then tells the old ones to quit; they stop accepting (the
listening socket stays open in the others, so no connection is refused),
finish their in-flight requests and exit.

The modules: ``control`` (what master and worker agree on: the worker's argv,
the inherited descriptors, the control lines), ``master`` (the listening socket,
spawning, restarts, reload generations, invalidation fan-out), ``proxy_master``
(the proxy-only master process), ``worker`` (a worker process's life),
``service`` (``ProxyWorkers``, the workers as a service of a node: health
verdicts, DB-less configurations) and ``stats`` (the workers' counters summed
for ``/status`` and ``/metrics``).
``python -m kongtx.workers`` runs ``__main__``.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kongtx.workers.control import FIRST_SOCKET_FD, encode, worker_command
    from kongtx.workers.master import (
        YOUNG,
        WorkerFailed,
        WorkerPool,
        WorkerProcess,
        bind_listener,
        fan_out,
        worker_count,
    )
    from kongtx.workers.proxy_master import serve_master
    from kongtx.workers.service import ProxyWorkers
    from kongtx.workers.worker import WorkerControl, accept_one_at_a_time, serve_worker

#: each name this package exports -> its module, imported by the name's first use
#: (PEP 562): a worker process (``python -m kongtx.workers N``) imports this package
#: first, and never needs the masters' modules (twisted.application's Service, the
#: process spawning, twisted.plugin and what it reads: issue 8, memory per worker)
_EXPORTS = {
    "FIRST_SOCKET_FD": "control",
    "encode": "control",
    "worker_command": "control",
    "YOUNG": "master",
    "WorkerFailed": "master",
    "WorkerPool": "master",
    "WorkerProcess": "master",
    "bind_listener": "master",
    "fan_out": "master",
    "worker_count": "master",
    "serve_master": "proxy_master",
    "ProxyWorkers": "service",
    "WorkerControl": "worker",
    "accept_one_at_a_time": "worker",
    "serve_worker": "worker",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FIRST_SOCKET_FD",
    "YOUNG",
    "ProxyWorkers",
    "WorkerControl",
    "WorkerFailed",
    "WorkerPool",
    "WorkerProcess",
    "accept_one_at_a_time",
    "bind_listener",
    "encode",
    "fan_out",
    "serve_master",
    "serve_worker",
    "worker_command",
    "worker_count",
]
