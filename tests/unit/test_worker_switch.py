"""The pieces of the 1 <-> N worker switch (kongtx.node_workers) that need no process.

The switch itself runs in real nodes: tests/e2e/test_node_workers_switch.py.
"""

from __future__ import annotations

import socket
from typing import Any

from test_workers import pool, proc
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.listeners import Adopting
from kongtx.workers import fan_out
from kongtx.workers.stats import WorkerStats


def test_fan_out_undone_leaves_the_cache_to_itself() -> None:
    """After the workers are gone (N -> 1) the cache invalidates only itself again."""
    p, _, clock = pool(1)
    p.start()
    cache = Cache(Clock(clock))
    unwrap = fan_out(cache, p)
    unwrap()
    cache.set("apis:1", {"id": "1"})
    cache.invalidate("apis:1")
    cache.flush()
    assert cache.peek("apis:1") == (False, None)
    assert proc(p.workers[0]).messages() == []


def test_retired_server_counters_stay_and_gauges_go() -> None:
    """The node's own proxy counters, folded in when it hands the proxy over."""
    stats = WorkerStats()
    stats.retire_server({"total_requests": 7, "connections_handled": 3, "connections_active": 2})
    assert stats.server_stats() == {
        "total_requests": 7,
        "connections_handled": 3,
        "connections_accepted": 0,
    }


def test_adopting_reactor_serves_the_socket_instead_of_binding() -> None:
    """``listenTCP`` (what the usual endpoints call) adopts the given socket."""
    reactor: Any = MemoryReactorClock()
    adopted: list[tuple[int, int, Any]] = []
    reactor.adoptStreamPort = lambda fd, family, factory: adopted.append((fd, family, factory))
    with socket.socket() as sock:
        factory = Factory()
        Adopting(reactor, sock).listenTCP(8000, factory, interface="127.0.0.1")
        assert adopted == [(sock.fileno(), socket.AF_INET, factory)]
    assert Adopting(reactor, sock).seconds() == reactor.seconds()  # the rest is the reactor's
