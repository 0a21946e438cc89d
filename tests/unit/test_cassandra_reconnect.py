"""The Cassandra store caps the driver's reconnection back-off (no server, no sockets)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from twisted.internet.task import Clock as FakeReactor

from kongtx.clock import Clock
from kongtx.store.cassandra import RECONNECT_MAX_DELAY, CassandraStore


class _FakeCluster:
    """Records the keyword arguments the store builds its driver Cluster with."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.made.append(kwargs)
        self.metadata = type("Metadata", (), {"keyspaces": {}})()

    def connect(self) -> object:
        return object()

    def shutdown(self) -> None:
        pass


def test_reconnection_back_off_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A down host is retried forever, at most RECONNECT_MAX_DELAY s apart (driver: 600 s, 64 tries)."""
    import cassandra.cluster

    monkeypatch.setattr(cassandra.cluster, "Cluster", _FakeCluster)
    reactor = FakeReactor()
    store = CassandraStore(origin="test", clock=Clock(reactor), reactor=reactor)
    store._driver.connect_blocking()
    policy = _FakeCluster.made[-1]["reconnection_policy"]
    # far past the driver's default of 64 attempts, and never more than the cap apart
    delays = list(itertools.islice(policy.new_schedule(), 1000))
    assert len(delays) == 1000
    assert delays[0] <= 1.15  # one second, give or take the driver's 15% jitter
    assert max(delays) <= RECONNECT_MAX_DELAY <= 10.0
