"""Fixtures for the real multi-node tests: PostgreSQL, a fresh database, the echo upstream."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e.proxy_support import Upstream, start_upstream
from tests.servers.postgres import PostgresServer, drop_database, fresh_database, server


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """An empty database for this module's cluster on the session's PostgreSQL."""
    name = "cluster_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    db = fresh_database(server(), name)
    try:
        yield db
    finally:
        drop_database(db)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """The echo upstream in its own process."""
    up = start_upstream()
    try:
        yield up
    finally:
        up.process.terminate()
        up.process.wait(10)
