"""Fixtures of the store contract suite: every test runs once per backend of backends.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kongtx.store.interface import IStore
from tests.store.backends import BACKENDS, Backend, Context, Harness
from tests.store.helpers import Rows, StoreSet


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    """One backend of the contract suite."""
    param: Backend = request.param
    return param


@pytest.fixture
def harness(backend: Backend, tmp_path: Any, request: pytest.FixtureRequest) -> Harness:
    """The backend's harness for this test (may skip, or fail under KONG_TEST_REQUIRE)."""
    return backend.make(Context(tmp_path=tmp_path, test_id=request.node.nodeid))


@pytest.fixture
def stores(harness: Harness) -> Iterator[StoreSet]:
    """A StoreSet on this test's database."""
    opened = StoreSet(harness)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def store(stores: StoreSet) -> IStore:
    """A started store ("node-a") on a fully migrated, empty database."""
    return stores.open("node-a", migrate=True)


@pytest.fixture
def rows() -> Rows:
    """A factory of valid rows."""
    return Rows()
