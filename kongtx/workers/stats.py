# -*- test-case-name: tests.unit.test_workers -*-
"""The master's sum of its workers' counters: ``GET /status`` and ``/metrics`` of a node with workers.

Each worker reports its counters (``{"op": "stats", "server": {...}, "metrics":
{...}}``) every second and once more after it drained; the master keeps each
live worker's latest report and folds a worker's last one into ``retired``
when it exits, so totals never go back when workers are replaced (a reload, a
restart).  Gauges (``connections_active``...) are the live workers' only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.metrics import Family, Metrics

#: the ``server`` counters that only grow (kept for workers that exited)
COUNTERS: tuple[str, ...] = ("connections_accepted", "connections_handled", "total_requests")


class WorkerStats:
    """The latest report of every live worker and the totals of those gone."""

    def __init__(self) -> None:
        #: worker -> (its ``server`` counters, its dumped request metrics)
        self.latest: dict[Any, tuple[dict[str, int], Mapping[str, Any]]] = {}
        self.retired_server: dict[str, int] = {}
        self.retired = Metrics()

    def received(self, worker: Any, message: Mapping[str, Any]) -> None:
        """``WorkerPool.on_message`` hook: keep a ``stats`` report."""
        if message.get("op") != "stats":
            return
        server, metrics = message.get("server"), message.get("metrics") or {}
        if isinstance(server, dict) and isinstance(metrics, dict):
            counters = {k: v for k, v in server.items() if isinstance(v, int)}
            self.latest[worker] = (counters, metrics)

    def exited(self, worker: Any) -> None:
        """``WorkerPool.on_exit`` hook: keep what a gone worker counted."""
        last = self.latest.pop(worker, None)
        if last is None:
            return
        server, metrics = last
        self.retire_server(server)
        self.retired.add(metrics)

    def retire_server(self, server: Mapping[str, int]) -> None:
        """Keep the counters of a listener gone (a worker's, the node's own proxy's)."""
        for key in COUNTERS:
            self.retired_server[key] = self.retired_server.get(key, 0) + server.get(key, 0)

    def server_stats(self) -> dict[str, int]:
        """stub_status counters summed over the workers, those gone included."""
        total = dict(self.retired_server)
        for server, _ in self.latest.values():
            for key, value in server.items():
                total[key] = total.get(key, 0) + value
        return total

    def metrics(self, own: Metrics) -> Metrics:
        """``own`` (the master's) plus every worker's request metrics, as one Metrics."""
        combined = Metrics(own.bounds)
        combined.add(own.dump())
        combined.add(self.retired.dump())
        for _, dumped in self.latest.values():
            combined.add(dumped)
        return combined


class SummedMetrics(Metrics):
    """A master's request metrics: what it counted itself plus its workers' reports."""

    def __init__(self, stats: WorkerStats) -> None:
        super().__init__()
        self._stats = stats

    def families(self) -> list[Family]:
        return self._stats.metrics(self).families()
