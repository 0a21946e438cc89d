"""The node cache's eviction order: CLOCK (second chance), an approximate LRU.

A hit marks its entry and moves nothing; to make room the sweep takes the oldest
entries, moving a marked one to the recent end once (its mark cleared) and evicting
an unmarked one.  Bare rows, bare negative entries and ``Entry`` (TTL) entries are
marked each their own way; these tests hold all three to the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from kongtx.cache import HAND_MIN, SECOND_CHANCES, Cache, estimate_size
from kongtx.clock import Clock
from kongtx.store.rows import COLD_TWIN, HIT_TWIN, FrozenRow


def _key(i: int) -> str:
    return f"k{i:06d}"


def _row(i: int) -> dict[str, Any]:
    return {"id": f"{i:08d}", "username": f"user{i:08d}"}


#: what each kind of entry stores for key i: a bare row, a bare negative entry, a
#: TTL entry (``Entry``), a non-row value (``Entry`` without TTL)
KINDS: dict[str, Callable[[Cache, int], None]] = {
    "bare row": lambda c, i: c.set(_key(i), _row(i)),
    "negative": lambda c, i: c.set(_key(i), None),
    "ttl row": lambda c, i: c.set(_key(i), _row(i), ttl=3600),
    "string": lambda c, i: c.set(_key(i), f"value-{i:08d}"),
}


def _cache_of(kind: str, count: int) -> tuple[Cache, MemoryReactorClock]:
    """A cache holding exactly ``count`` entries of ``kind`` (k000000...), full to the byte."""
    reactor = MemoryReactorClock()
    probe = Cache(Clock(reactor))
    KINDS[kind](probe, 0)
    cache = Cache(Clock(reactor), max_bytes=probe.size * count)
    for i in range(count):
        KINDS[kind](cache, i)
    assert len(cache) == count and cache.evictions == 0
    return cache, reactor


def _held(cache: Cache, count: int) -> set[int]:
    return {i for i in range(count) if _key(i) in cache._entries}


@pytest.mark.parametrize("kind", list(KINDS))
def test_unreferenced_entries_go_oldest_first(kind: str) -> None:
    cache, _ = _cache_of(kind, 10)
    for i in range(10, 13):
        KINDS[kind](cache, i)
    assert _held(cache, 13) == set(range(3, 13))
    assert cache.evictions == 3 and cache.size <= cache.max_bytes


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_entry_found_since_the_sweep_passed_outlives_the_others(kind: str) -> None:
    cache, _ = _cache_of(kind, 10)
    assert cache.peek("k000000")[0] and cache.peek("k000004")[0]
    for i in range(10, 18):  # 8 newcomers: the 8 unmarked oldest go, 0 and 4 stay
        KINDS[kind](cache, i)
    assert _held(cache, 18) == {0, 4, *range(10, 18)}
    # the sweep moved each to the recent end when it met it, mark cleared: 0 before 10
    # was stored, 4 after 12 -- not found again, they go in that order with the others
    for i in range(18, 20):
        KINDS[kind](cache, i)
    assert _held(cache, 20) == {4, *range(11, 20)}
    for i in range(20, 23):
        KINDS[kind](cache, i)
    assert _held(cache, 23) == set(range(13, 23))


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_second_hit_after_the_pass_earns_another_chance(kind: str) -> None:
    cache, _ = _cache_of(kind, 10)
    cache.peek("k000000")
    for i in range(10, 19):  # 9 newcomers: 1-9 go, 0 moves to the end unmarked
        KINDS[kind](cache, i)
    assert 0 in _held(cache, 19)
    cache.peek("k000000")
    for i in range(19, 28):  # 9 more: 10-18 go, 0 survives again
        KINDS[kind](cache, i)
    assert _held(cache, 28) == {0, *range(19, 28)}


def test_every_entry_marked_the_sweep_clears_the_marks_then_evicts_the_oldest() -> None:
    cache, _ = _cache_of("bare row", 10)
    for i in range(10):
        cache.peek(_key(i))
    KINDS["bare row"](cache, 10)
    assert _held(cache, 11) == set(range(1, 11))
    assert cache.evictions == 1


def test_one_eviction_gives_a_bounded_number_of_second_chances() -> None:
    """Every entry found lately: one store moves SECOND_CHANCES of them to the end and
    evicts the next one, marked or not; the next store goes on from there."""
    count = SECOND_CHANCES * 3
    cache, _ = _cache_of("bare row", count)
    for i in range(count):
        cache.peek(_key(i))
    KINDS["bare row"](cache, count)
    assert cache.evictions == 1
    assert _held(cache, count + 1) == set(range(count + 1)) - {SECOND_CHANCES}
    order = cache.keys()
    assert order[-SECOND_CHANCES - 1 :] == [*map(_key, range(SECOND_CHANCES)), _key(count)]
    KINDS["bare row"](cache, count + 1)
    assert cache.evictions == 2 and _key(2 * SECOND_CHANCES + 1) not in cache._entries


def test_storing_a_key_again_counts_as_recent() -> None:
    cache, _ = _cache_of("bare row", 10)
    cache.set("k000000", _row(100))  # stored again (another value)
    for i in range(10, 19):
        KINDS["bare row"](cache, i)
    assert 0 in _held(cache, 19) and cache.peek("k000000")[1] == _row(100)


def test_the_new_entry_is_never_the_one_evicted() -> None:
    cache, _ = _cache_of("bare row", 4)
    big = "x" * (cache.max_bytes * 2)
    cache.set("big", big)  # larger than the bound: every other entry goes, it stays
    assert cache.keys() == ["big"] and cache.evictions == 4
    cache.set("small", "y")
    assert cache.keys() == ["small"] and cache.size == estimate_size("small") + estimate_size("y")


def test_expired_ttl_entries_are_misses_marked_or_not() -> None:
    cache, reactor = _cache_of("ttl row", 4)
    cache.peek("k000000")
    reactor.advance(3601)
    assert cache.peek("k000000") == (False, None) and cache.peek("k000001") == (False, None)
    assert len(cache) == 2


def test_a_row_found_reads_the_same_marked_or_not() -> None:
    cache, _ = _cache_of("bare row", 3)
    before = cache._entries["k000001"]
    shape = type(before)
    hit, row = cache.peek("k000001")
    assert hit and row is before and type(row) is HIT_TWIN[shape]
    assert COLD_TWIN[type(row)] is shape and isinstance(row, shape)
    assert isinstance(row, FrozenRow) and type(row).__name__ == "FrozenRow"
    assert row == _row(1) and dict(row) == _row(1) and list(row) == ["id", "username"]
    assert repr(row) == f"FrozenRow({_row(1)!r})"
    with pytest.raises(TypeError):
        row["id"] = "changed"  # type: ignore[index]
    size = cache.size
    for i in range(3, 5):  # the sweep passes it: back to the shape's class, same size
        KINDS["bare row"](cache, i)
    assert type(cache._entries["k000001"]) is shape and cache.size == size


def test_the_sweep_reads_a_slice_and_keeps_no_entry_it_passed() -> None:
    count = HAND_MIN * 4
    cache, _ = _cache_of("string", count)
    KINDS["string"](cache, count)
    assert len(cache._hand) == HAND_MIN and cache._hand_at == 1
    assert cache._hand[0] is None and cache._hand[1] is not None
    cache.flush()
    assert cache._hand == [] and len(cache) == 0


def test_invalidations_between_sweeps_keep_the_order_and_the_size() -> None:
    cache, _ = _cache_of("bare row", 20)
    KINDS["bare row"](cache, 20)  # the sweep read its slice (k000000 evicted)
    cache.invalidate("k000001")  # gone while in the slice: skipped, not counted
    cache.invalidate("k000002")
    cache.set("k000002", _row(2))  # stored again: at the recent end, a new entry
    cache.invalidate_prefix("k00000")  # k000003..k000009 (and k000002)
    for i in range(21, 31):
        KINDS["bare row"](cache, i)
    assert _held(cache, 31) == set(range(11, 31))
    assert cache.evictions == 1 + 1  # k000000, then k000010
    assert cache.size == sum(estimate_size(k) + estimate_size(v) for k, v in cache._entries.items())


def test_churn_keeps_the_bound_the_size_and_the_hot_keys() -> None:
    """Random stores, hits, invalidations and flushes: the size always adds up, never
    exceeds the bound, and keys hit between every few stores are never evicted."""
    rng = random.Random(8)
    cache, _ = _cache_of("bare row", 500)
    hot = [_key(i) for i in range(0, 500, 50)]
    for name in hot:
        cache.peek(name)
    for step in range(30_000):
        op = rng.random()
        key = _key(rng.randrange(5000))
        if op < 0.7:
            cache.set(key, None if op < 0.1 else {"id": key, "n": step})
        elif op < 0.95:
            cache.peek(key)
        elif op < 0.9999:
            if key not in hot:
                cache.invalidate(key)
        else:
            cache.flush()
            for name in hot:
                cache.set(name, {"id": name})
        if step % 100 == 0:
            for name in hot:
                assert cache.peek(name)[0], (step, name)
        assert cache.size <= cache.max_bytes
    assert cache.size == sum(
        estimate_size(k) + (16 if v is None else estimate_size(v))
        for k, v in ((k, cache.peek(k)[1]) for k in cache.keys())
    )
    assert cache.evictions > 10_000


def test_sweep_work_per_eviction_is_bounded() -> None:
    """Eviction under churn reads each entry a bounded number of times (amortised O(1)),
    holes at the dict's front included: the slices it reads add up to a few per eviction."""
    cache, _ = _cache_of("string", 20_000)
    read = 0
    for i in range(20_000, 120_000):
        before = cache._hand
        KINDS["string"](cache, i)
        if cache._hand is not before:
            read += len(cache._hand)
        if i % 3 == 0:
            cache.peek(_key(i - 5_000))
    assert cache.evictions >= 100_000 - 1
    assert read <= 2 * cache.evictions
