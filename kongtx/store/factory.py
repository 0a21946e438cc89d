# -*- test-case-name: tests.unit.test_store_factory -*-
"""Build the configured store: the one place that maps ``database`` to a backend.

Backends are imported lazily so that a node on the embedded store never loads
the PostgreSQL or Cassandra drivers.
"""

from __future__ import annotations

import os
from typing import Any

from kongtx.clock import Clock
from kongtx.store.interface import IStore
from kongtx.store.tables import TABLES


def sqlite_path(config: Any) -> str:
    """The embedded store's file: ``sqlite_path``, or ``<prefix>/kong.db``."""
    path = getattr(config, "sqlite_path", None)
    return str(path) if path else os.path.join(config.prefix, "kong.db")


def open_store(config: Any, reactor: Any, clock: Clock, origin: str) -> IStore:
    """The store ``config.database`` names, not yet started.

    ``off`` (DB-less mode) is an empty in-memory store: the node fills it from
    ``declarative_config`` and ``POST /config`` replaces it (kongtx.declarative).
    """
    if config.database == "off":
        from kongtx.store.memory import MemoryStore

        return MemoryStore(TABLES, origin, clock)
    if config.database == "sqlite":
        from kongtx.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(config), TABLES, origin, clock, reactor)
    if config.database == "postgres":
        from kongtx.store.postgres import PostgresStore

        return PostgresStore(
            host=config.pg_host,
            port=config.pg_port,
            user=config.pg_user,
            password=config.pg_password,
            database=config.pg_database,
            ssl=config.pg_ssl,
            ssl_verify=config.pg_ssl_verify,
            timeout=config.pg_timeout / 1000.0,
            tables=TABLES,
            origin=origin,
            clock=clock,
            reactor=reactor,
        )
    if config.database == "cassandra":
        from kongtx.store.cassandra import CassandraStore

        return CassandraStore(
            contact_points=config.cassandra_contact_points,
            port=config.cassandra_port,
            keyspace=config.cassandra_keyspace,
            consistency=config.cassandra_consistency,
            timeout=config.cassandra_timeout,
            ssl=config.cassandra_ssl,
            ssl_verify=config.cassandra_ssl_verify,
            username=config.cassandra_username,
            password=config.cassandra_password,
            repl_strategy=config.cassandra_repl_strategy,
            repl_factor=config.cassandra_repl_factor,
            data_centers=config.cassandra_data_centers,
            tables=TABLES,
            origin=origin,
            clock=clock,
            reactor=reactor,
        )
    raise ValueError(f"unknown database: {config.database!r}")


def migration_identifiers(registry: Any) -> list[str]:
    """``core`` first, then every loaded plugin, as Kong's runner orders them."""
    return ["core", *registry.names()]
