"""open_store: each backend gets the settings the configuration names."""

from __future__ import annotations

from twisted.internet import task

from kongtx.clock import Clock
from kongtx.config_loading import load_config
from kongtx.store.factory import open_store
from kongtx.store.postgres import PostgresStore


def test_pg_timeout_is_the_postgres_store_timeout_in_seconds(tmp_path: object) -> None:
    config = load_config(
        None, {"KONG_DATABASE": "postgres", "KONG_PG_TIMEOUT": "1500", "KONG_PREFIX": str(tmp_path)}
    )
    reactor = task.Clock()
    store = open_store(config, reactor, Clock(reactor), "node")
    assert isinstance(store, PostgresStore)
    assert store.timeout == 1.5


def test_pg_timeout_defaults_to_five_seconds(tmp_path: object) -> None:
    config = load_config(None, {"KONG_DATABASE": "postgres", "KONG_PREFIX": str(tmp_path)})
    reactor = task.Clock()
    store = open_store(config, reactor, Clock(reactor), "node")
    assert isinstance(store, PostgresStore)
    assert store.timeout == 5.0
