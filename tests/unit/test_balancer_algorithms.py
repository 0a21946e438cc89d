"""The balancing algorithms: exact weighted round-robin, a stable hash ring, least connections."""

from __future__ import annotations

from collections import Counter

import pytest

from kongtx.balancer.algorithms import (
    HashRing,
    LeastConnections,
    SmoothWeightedRoundRobin,
    key_hash,
)

NAMES = [f"10.0.0.{i}:80/10.0.0.{i}:80" for i in range(1, 9)]
KEYS = [f"client-{i}" for i in range(20000)]


# ------------------------------------------------------------------ round-robin


def test_round_robin_split_is_exact() -> None:
    """Weights 100 and 300 give exactly 10 and 30 of 40 picks."""
    rr = SmoothWeightedRoundRobin([100, 300])
    assert Counter(rr.next() for _ in range(40)) == {0: 10, 1: 30}


def test_round_robin_is_smooth() -> None:
    """nginx's example: weights 5, 1, 1 interleave as a a b a c a a."""
    rr = SmoothWeightedRoundRobin([5, 1, 1])
    assert [rr.next() for _ in range(7)] == [0, 0, 1, 0, 2, 0, 0]


def test_round_robin_weight_zero_and_unusable_skipped() -> None:
    """A weight of 0 never gets a pick; an unusable peer is skipped; none usable -> None."""
    rr = SmoothWeightedRoundRobin([100, 0, 100])
    picks = [rr.next() for _ in range(10)]
    assert 1 not in picks and Counter(picks) == {0: 5, 2: 5}
    assert {rr.next(lambda i: i != 0) for _ in range(5)} == {2}
    assert rr.next(lambda i: False) is None
    assert SmoothWeightedRoundRobin([]).next() is None


# ------------------------------------------------------------------ hash ring


def test_ring_is_deterministic() -> None:
    """Two rings built from the same ordered peers map every key alike (any node, any run)."""
    a = HashRing(NAMES[:4], [100, 100, 50, 10], 10000)
    b = HashRing(NAMES[:4], [100, 100, 50, 10], 10000)
    assert a.owner == b.owner
    assert all(a.next(k) == b.next(k) for k in KEYS[:2000])
    assert key_hash("abc") == 891568578  # CRC-32: the same in every process


def test_ring_slots_follow_weights() -> None:
    """Each peer owns its weighted share of the slots; keys spread accordingly."""
    ring = HashRing(NAMES[:3], [100, 300, 0], 10000)
    assert ring.counts == [2500, 7500, 0]
    spread = Counter(ring.next(k) for k in KEYS)
    assert 2 not in spread
    assert spread[1] / len(KEYS) == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_ring_adding_a_peer_moves_about_one_in_n_keys(n: int) -> None:
    """Appending a peer moves only the keys of the slots it takes: about 1/(n+1)."""
    before = HashRing(NAMES[:n], [100] * n, 10000)
    after = HashRing(NAMES[: n + 1], [100] * (n + 1), 10000)
    moved = sum(1 for k in KEYS if before.next(k) != after.next(k))
    assert moved / len(KEYS) == pytest.approx(1 / (n + 1), abs=0.03)
    # and every key that moved went to the new peer
    assert all(after.next(k) == n for k in KEYS if before.next(k) != after.next(k))


def test_ring_skips_an_unusable_peer_to_the_next_point() -> None:
    """A key whose peer is unusable lands on the next usable slot; other keys stay put."""
    ring = HashRing(NAMES[:3], [100, 100, 100], 1000)
    down = 1
    for key in KEYS[:3000]:
        usual = ring.next(key)
        chosen = ring.next(key, lambda i: i != down)
        if usual != down:
            assert chosen == usual
        else:
            assert chosen in (0, 2)
            slot = ring.position(key)
            while ring.owner[slot] == down:
                slot = (slot + 1) % ring.slots
            assert chosen == ring.owner[slot]
    assert ring.next("k", lambda i: False) is None


def test_ring_of_no_peers() -> None:
    """No peer (or only weight 0): nothing to pick."""
    assert HashRing([], [], 100).next("k") is None
    assert HashRing(NAMES[:1], [0], 100).next("k") is None


# ------------------------------------------------------------------ least connections


def test_least_connections_prefers_the_idle_peer() -> None:
    """Busy peers lose to idle ones; ties are taken in turn; release counts down."""
    lc = LeastConnections([100, 100])
    first = lc.next()
    assert first is not None
    lc.acquire(first)
    second = lc.next()
    assert second is not None and second != first
    lc.acquire(second)
    lc.acquire(first)  # first now has 2 in flight
    assert lc.next() == second
    lc.release(first)
    lc.release(first)
    assert lc.next() == first
    lc.release(first)  # never below zero
    assert lc.active[first] == 0


def test_least_connections_weighs_by_weight() -> None:
    """A peer of weight 300 carries three times the requests of one of weight 100."""
    lc = LeastConnections([100, 300])
    for _ in range(8):
        i = lc.next()
        assert i is not None
        lc.acquire(i)
    assert lc.active == [2, 6]
    assert lc.next(lambda i: i == 0) == 0
    assert lc.next(lambda i: False) is None
