"""kongtx.store.rows: compact read-only cached rows, and the cache storing them."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet import task

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.store.rows import FrozenRow, freeze

ROW = {"id": "c0ffee", "consumer_id": "beef", "key": "secret", "created_at": 1480000000000}


def test_a_flat_row_reads_like_the_dict() -> None:
    row = freeze(dict(ROW))
    assert isinstance(row, FrozenRow) and isinstance(row, Mapping)
    assert row == ROW and ROW == row
    assert row["key"] == "secret" and row.get("key") == "secret"
    assert row.get("missing") is None and row.get("missing", 3) == 3
    assert "id" in row and "missing" not in row
    assert list(row) == list(ROW) and len(row) == 4
    assert (
        dict(row) == ROW and dict(row.items()) == ROW and list(row.values()) == list(ROW.values())
    )
    assert {**row} == ROW
    with pytest.raises(KeyError):
        row["missing"]
    assert bool(row)


def test_json_sees_a_mapping_not_a_list() -> None:
    row = freeze(dict(ROW))
    with pytest.raises(TypeError):
        json.dumps(row)  # never silently an array
    assert json.loads(json.dumps(row, default=dict)) == ROW


def test_mutation_is_an_error() -> None:
    row = freeze(dict(ROW))
    with pytest.raises(TypeError, match="read-only"):
        row["key"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        del row["key"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        row.update(key="other")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        row.pop("key")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        row.setdefault("x", 1)  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        row._0 = "x"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        row.__dict__  # noqa: B018  (slotted: no per-row dict)
    assert row["key"] == "secret"
    mutable = row.copy()
    mutable["key"] = "other"
    assert mutable["key"] == "other" and row["key"] == "secret"
    assert (row | {"key": "x"})["key"] == "x"


def test_rows_of_one_shape_share_a_class_and_are_smaller_than_dicts() -> None:
    a = freeze(dict(ROW))
    b = freeze({**ROW, "id": "other"})
    assert type(a) is type(b)
    assert type(freeze({"id": "x"})) is not type(a)
    assert sys.getsizeof(a) < sys.getsizeof(dict(ROW)) / 2


def test_only_flat_dicts_are_frozen() -> None:
    nested = {"id": "p", "config": {"minute": 1}}
    listed = {"id": "o", "redirect_uri": ["http://a"]}
    assert freeze(nested) is nested and freeze(listed) is listed
    rows = [dict(ROW)]
    assert freeze(rows) is rows
    assert freeze({}) == {} and freeze("text") == "text" and freeze(None) is None
    already = freeze(dict(ROW))
    assert freeze(already) is already


def test_values_are_kept_as_given() -> None:
    """No interning: a row holds the very strings it was given (sharing is the caller's)."""
    cid = "".join(["a1b2c3d4", "-consumer"])
    row = freeze({"id": "k1", "consumer_id": cid})
    assert row["consumer_id"] is cid


def test_copy_and_pickle() -> None:
    row = freeze(dict(ROW))
    assert copy.copy(row) is row and copy.deepcopy(row) is row
    again = pickle.loads(pickle.dumps(row))
    assert again == ROW and isinstance(again, FrozenRow)
    assert repr(row).startswith("FrozenRow({")


@pytest.fixture
def cache() -> Cache:
    return Cache(Clock(task.Clock()), max_bytes=10_000)


def test_cache_stores_flat_rows_frozen(cache: Cache) -> None:
    cache.set("consumers:1", {"id": "1", "username": "u"})
    hit, row = cache.peek("consumers:1")
    assert hit and isinstance(row, FrozenRow) and row == {"id": "1", "username": "u"}
    with pytest.raises(TypeError):
        row["username"] = "changed"
    cache.set("plugins:x", {"id": "p", "config": {"a": 1}})
    assert type(cache.peek("plugins:x")[1]) is dict


def test_every_waiter_of_a_load_gets_the_frozen_row(cache: Cache) -> None:
    from twisted.internet.defer import ensureDeferred

    async def loader() -> dict[str, Any]:
        return {"id": "1", "username": "u"}

    results: list[Any] = []
    ensureDeferred(cache.get_or_load("consumers:1", loader)).addCallback(results.append)
    assert isinstance(results[0], FrozenRow)
    assert cache.peek("consumers:1")[1] is results[0]


def test_cache_size_accounting_with_bare_and_ttl_entries(cache: Cache) -> None:
    cache.set("a", {"id": "1"})
    cache.set("b", None)
    cache.set("c", {"id": "2"}, ttl=5)
    cache.set("d", [1, 2, 3])
    assert cache.size > 0
    cache.set("a", {"id": "1", "username": "longer"})  # replacing a bare row
    for key in ("a", "b", "c", "d"):
        cache.invalidate(key)
    assert cache.size == 0 and len(cache) == 0


def test_lru_eviction_with_bare_rows(cache: Cache) -> None:
    for i in range(200):
        cache.set(f"consumers:{i}", {"id": str(i), "username": "u" * 20})
        cache.peek("consumers:0")  # kept hot
    assert cache.size <= cache.max_bytes
    assert cache.peek("consumers:0")[0]
    assert not cache.peek("consumers:1")[0]
    assert cache.evictions > 0
    total = sum(len(k) for k in cache.keys())
    assert total > 0


def test_ttl_row_expires(cache: Cache) -> None:
    clock = task.Clock()
    c = Cache(Clock(clock))
    c.set("k", {"id": "1"}, ttl=1)
    assert c.peek("k")[0]
    clock.advance(2)
    assert c.peek("k") == (False, None)
    assert c.size == 0


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's cycle collector")
def test_rows_are_not_visited_by_the_cycle_collector() -> None:
    import gc

    row = freeze(dict(ROW))
    assert not gc.is_tracked(row)  # plain values only: never in a cycle (as a dict of them)
    assert row["key"] == "secret"
    del row
    gc.collect()
