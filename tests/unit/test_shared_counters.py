"""The ``local`` counters shared by a node's processes through a mapped file (SPEC §4.4)."""

from __future__ import annotations

import calendar
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock as FakeTime
from twisted.logger import globalLogPublisher

from kongtx.clock import Clock
from kongtx.plugins.base import PluginServices
from kongtx.plugins.rate_limiting.handler import Handler
from kongtx.plugins.ratelimit_counters import PERIOD_INDEX, PERIODS, period_starts
from kongtx.plugins.ratelimit_local import (
    ROW_CACHE,
    LocalCounters,
    ProcessCounters,
    local_counters,
    share_local_counters,
    unshare_local_counters,
)
from kongtx.plugins.shared_counters import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    BadCounterFile,
    CounterTable,
    SharedCounters,
    key_digest,
)
from tests.fakes import FakeContext

# 2016-11-28 19:27:43.250 UTC
NOW = calendar.timegm((2016, 11, 28, 19, 27, 43, 0, 0, 0)) + 0.25
API = {"id": "a1b2c3d4-0000-4000-8000-00000000000a", "name": "api"}
ROOT = Path(__file__).resolve().parents[2]


def fake_clock(now: float = NOW) -> tuple[Clock, FakeTime]:
    time = FakeTime()
    time.advance(now)
    return Clock(time), time


@pytest.fixture
def table(tmp_path: Path) -> Iterator[CounterTable]:
    t = CounterTable(str(tmp_path / "local_counters.shm"), create=True)
    yield t
    t.close()


# ------------------------------------------------------------ the same contract for both stores


@pytest.fixture(params=["process", "shared"])
def make(request: Any, tmp_path: Path) -> Iterator[Callable[[Clock], LocalCounters]]:
    """Build the counters under test: the per-process dict, or the shared table."""
    tables: list[CounterTable] = []

    def build(clock: Clock) -> LocalCounters:
        if request.param == "process":
            return ProcessCounters(clock)
        tables.append(CounterTable(str(tmp_path / "c.shm"), create=True, slots=1024))
        return SharedCounters(clock, tables[-1])

    yield build
    for t in tables:
        t.close()


def test_missing_key_reads_zero(make: Callable[[Clock], LocalCounters]) -> None:
    """A counter never added to reads 0, alone or among others."""
    counters = make(fake_clock()[0])
    assert counters.read_now(["nope"]) == [0]
    counters.increment_now("api", "me", period_starts(NOW), 2)
    usage = counters.usage_now("api", "other", period_starts(NOW), ["second", "hour"])
    assert usage == {"second": 0, "hour": 0}


def test_increment_counts_all_six_periods(make: Callable[[Clock], LocalCounters]) -> None:
    """An increment adds to the counter of every period; usage reads the ones asked for."""
    counters = make(fake_clock()[0])
    starts = period_starts(NOW)
    counters.increment_now("api", "me", starts, 1)
    counters.increment_now("api", "me", starts, 3)
    assert counters.usage_now("api", "me", starts, list(PERIODS)) == dict.fromkeys(PERIODS, 4)
    assert counters.usage_now("api", "me", starts, ["minute"]) == {"minute": 4}
    assert len(counters) == 6


def test_several_keys_in_one_call(make: Callable[[Clock], LocalCounters]) -> None:
    """add_now takes one key a period and read_now any list, missing keys included."""
    counters = make(fake_clock()[0])
    keys = [f"k-{p}" for p in PERIODS]
    counters.add_now(keys, 5)
    counters.add_now(keys, -2)
    assert counters.read_now([keys[3], "missing", keys[0], keys[5]]) == [3, 0, 3, 3]


def test_each_counter_expires_after_its_period(make: Callable[[Clock], LocalCounters]) -> None:
    """A counter lives one period length from its creation; an add after that starts it again."""
    clock, time = fake_clock()
    counters = make(clock)
    keys = [f"k-{p}" for p in PERIODS]
    counters.add_now(keys, 2)
    time.advance(1)
    assert counters.read_now(keys) == [0, 2, 2, 2, 2, 2]
    counters.add_now(keys, 1)
    assert counters.read_now(keys) == [1, 3, 3, 3, 3, 3]
    time.advance(59)  # the minute counter was created 60 s ago
    assert counters.read_now(keys) == [0, 0, 3, 3, 3, 3]
    time.advance(86400)
    assert counters.read_now(keys) == [0, 0, 0, 0, 3, 3]
    time.advance(31536000)
    assert counters.read_now(keys) == [0] * 6


def test_expired_counters_are_not_held(make: Callable[[Clock], LocalCounters]) -> None:
    """After every counter expired, new adds leave only the new counters held."""
    clock, time = fake_clock()
    counters = make(clock)
    counters.increment_now("api", "me", period_starts(NOW), 1)
    time.advance(31536000 + 5)
    counters.increment_now("api", "you", period_starts(time.seconds()), 1)
    assert len(counters) == 6


def test_named_limits_are_counted_apart(make: Callable[[Clock], LocalCounters]) -> None:
    """response-ratelimiting names get their own counters, apart from rate-limiting's."""
    counters = make(fake_clock()[0])
    starts = period_starts(NOW)
    counters.increment_now("api", "me", starts, 2, "videos")
    counters.increment_now("api", "me", starts, 1)
    assert counters.usage_now("api", "me", starts, ["hour"], "videos") == {"hour": 2}
    assert counters.usage_now("api", "me", starts, ["hour"], "images") == {"hour": 0}
    assert counters.usage_now("api", "me", starts, ["hour"]) == {"hour": 1}


def test_async_interface_matches(make: Callable[[Clock], LocalCounters]) -> None:
    """The Deferred-returning usage/increment see the same counters, already fired."""
    counters = make(fake_clock()[0])
    starts = period_starts(NOW)
    d = ensureDeferred(counters.increment("api", "me", starts, 7))
    assert d.called
    u = ensureDeferred(counters.usage("api", "me", starts, ["day"]))
    results: list[Any] = []
    u.addCallback(results.append)
    assert results == [{"day": 7}]


def test_count_within_counts_only_under_every_limit(
    make: Callable[[Clock], LocalCounters],
) -> None:
    """count_within reads the limited periods (in the order given) and adds to all six only
    while each has room: Kong's access phase, in one step."""
    counters = make(fake_clock()[0])
    starts = period_starts(NOW)
    hour, second = PERIOD_INDEX["hour"], PERIOD_INDEX["second"]
    seen = [
        counters.count_within("api", "me", starts, [(hour, 3), (second, 10)], 1) for _ in range(5)
    ]
    assert seen == [[0, 0], [1, 1], [2, 2], [3, 3], [3, 3]]
    assert counters.usage_now("api", "me", starts, list(PERIODS)) == dict.fromkeys(PERIODS, 3)
    # a fractional limit has room while limit - usage > 0
    assert counters.count_within("api", "you", starts, [(hour, 0.5)], 1) == [0]
    assert counters.count_within("api", "you", starts, [(hour, 0.5)], 1) == [1]
    assert counters.usage_now("api", "you", starts, ["year"]) == {"year": 1}


def test_counters_of_a_new_second_are_new_keys(make: Callable[[Clock], LocalCounters]) -> None:
    """The keys remembered for a second are not reused in the next: its second counter
    starts at 0 while the longer periods keep counting."""
    clock, time = fake_clock()
    counters = make(clock)
    counters.increment_now("api", "me", period_starts(time.seconds()), 1)
    counters.increment_now("api", "me", period_starts(time.seconds()), 1)
    time.advance(1)
    starts = period_starts(time.seconds())
    counters.increment_now("api", "me", starts, 1)
    usage = counters.usage_now("api", "me", starts, ["second", "minute", "year"])
    assert usage == {"second": 1, "minute": 3, "year": 3}


def test_remembered_rows_are_bounded(make: Callable[[Clock], LocalCounters]) -> None:
    """At most ROW_CACHE clients' keys are remembered; a forgotten row is built again the same."""
    counters = make(fake_clock()[0])
    starts = period_starts(NOW)
    first = counters.row("api", "client-0", starts)
    assert counters.row("api", "client-0", starts) is first
    for i in range(ROW_CACHE + 10):
        counters.row("api", f"client-{i}", starts)
    assert len(counters._rows) <= ROW_CACHE
    again = counters.row("api", "client-0", starts)
    assert again is not first and again == first
    assert again == [
        counters.stored(counters.key("api", "client-0", starts[p], p, None)) for p in PERIODS
    ]


def test_period_starts_are_shared_within_a_second() -> None:
    """The requests of one second get the same windows mapping; the next second a new one."""
    a, b = period_starts(NOW), period_starts(NOW + 0.5)
    assert a is b
    c = period_starts(NOW + 1)
    assert c is not a and c["second"] == a["second"] + 1000 and c["minute"] == a["minute"]


# ------------------------------------------------------------ the shared table itself


def colliding_keys(slots: int, home: int, n: int) -> list[str]:
    """``n`` keys whose digests all start their probe window at slot ``home``."""
    out: list[str] = []
    i = 0
    while len(out) < n and i < 100_000:
        key = f"key-{i}"
        if int.from_bytes(key_digest(key)[:8], "little") % slots == home:
            out.append(key)
        i += 1
    assert len(out) == n
    return out


def test_two_mappings_of_one_file_share_counts(table: CounterTable) -> None:
    """Counters added through one mapping are read through another opened on the same file."""
    clock, _ = fake_clock()
    other = CounterTable(table.path, create=False)
    try:
        a, b = SharedCounters(clock, table), SharedCounters(clock, other)
        a.increment_now("api", "me", period_starts(NOW), 1)
        b.increment_now("api", "me", period_starts(NOW), 1)
        assert a.usage_now("api", "me", period_starts(NOW), ["minute"]) == {"minute": 2}
        assert other.slots == table.slots == 65536
    finally:
        other.close()


def test_lookup_passes_expired_slots(tmp_path: Path) -> None:
    """A key behind an expired slot of its window is still found, and added to in place."""
    t = CounterTable(str(tmp_path / "c"), create=True, slots=8, window=8)
    try:
        a, b = (key_digest(k) for k in colliding_keys(8, 3, 2))
        t.add([a], [1.0], 1, NOW)
        t.add([b], [60.0], 1, NOW)
        later = NOW + 1  # a expired, b still there one slot further
        assert t.read([a, b], later) == [0, 1]
        t.add([b], [60.0], 1, later)
        assert t.read([b], later) == [2]
        assert t.live(later) == 1
        t.add([a], [1.0], 5, later)  # takes its old, expired slot back
        assert t.read([a, b], later) == [5, 2]
        assert t.live(later) == 2
    finally:
        t.close()


def test_full_window_evicts_the_soonest_expiring(tmp_path: Path) -> None:
    """With every slot of the window live, a new key replaces the one expiring soonest; one warning."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    t = CounterTable(str(tmp_path / "c"), create=True, slots=4, window=4)
    try:
        keys = [key_digest(k) for k in colliding_keys(4, 0, 6)]
        lifetimes = [3600.0, 60.0, 86400.0, 1.0 + 0.5]
        for digest, life in zip(keys[:4], lifetimes, strict=True):
            t.add([digest], [life], 1, NOW)
        t.add([keys[4]], [10.0], 9, NOW)  # evicts keys[3] (expires in 1.5 s)
        assert t.read(keys[:5], NOW) == [1, 1, 1, 0, 9]
        t.add([keys[5]], [10.0], 4, NOW)  # evicts keys[4] (10 s) now: before keys[1] (60 s)
        assert t.read(keys, NOW) == [1, 1, 1, 0, 0, 4]
    finally:
        globalLogPublisher.removeObserver(seen.append)
        t.close()
    warnings = [e for e in seen if e.get("log_namespace") == "kongtx.plugins.shared_counters"]
    assert len(warnings) == 1


def test_a_tiny_table_stays_exact_until_full(tmp_path: Path) -> None:
    """Every key of a table filled exactly to its size keeps its own count."""
    t = CounterTable(str(tmp_path / "c"), create=True, slots=16, window=16)
    try:
        keys = [key_digest(f"k{i}") for i in range(16)]
        for n, digest in enumerate(keys):
            t.add([digest], [60.0], n + 1, NOW)
        assert t.read(keys, NOW) == list(range(1, 17))
        assert t.live(NOW) == 16
    finally:
        t.close()


def test_count_saturates_at_64_bits(table: CounterTable) -> None:
    """A count beyond a signed 64-bit integer stays at its bound instead of failing."""
    digest = key_digest("big")
    table.add([digest], [60.0], 2**63 - 1, NOW)
    table.add([digest], [60.0], 10, NOW)
    assert table.read([digest], NOW) == [2**63 - 1]


def test_read_add_passes_expired_slots_and_places_new_keys_last(tmp_path: Path) -> None:
    """read_add finds a key behind an expired slot of its window, adds to it in place, and
    gives the missing keys free slots only after the found ones were added to."""
    t = CounterTable(str(tmp_path / "c"), create=True, slots=8, window=8)
    try:
        a, b, c = (key_digest(k) for k in colliding_keys(8, 3, 3))
        t.add([a], [1.0], 1, NOW)
        t.add([b], [60.0], 4, NOW)
        later = NOW + 1  # a expired, b one slot further
        keys = [t.slot_key(d) for d in (a, b, c)]
        assert t.read_add(keys, [(1, 10.0)], [1.0, 60.0, 60.0], 2, later) == [4]
        assert t.read([a, b, c], later) == [2, 6, 2]
        assert t.live(later) == 3
        # one limit used up: nothing is added
        assert t.read_add(keys, [(0, 5.0), (1, 6.0)], [1.0, 60.0, 60.0], 1, later) == [2, 6]
        assert t.read([a, b, c], later) == [2, 6, 2]
    finally:
        t.close()


def test_read_add_evicts_as_add_does(tmp_path: Path) -> None:
    """With the window full, a missing key of read_add evicts the slot expiring soonest,
    as add does (the keys found are added to first, then the missing ones placed)."""
    t = CounterTable(str(tmp_path / "c"), create=True, slots=4, window=4)
    try:
        keys = [key_digest(k) for k in colliding_keys(4, 0, 5)]
        for digest, life in zip(keys[:4], [5.0, 60.0, 3600.0, 86400.0], strict=True):
            t.add([digest], [life], 1, NOW)
        # keys[0] is counted, then keys[4] evicts the soonest expiring: keys[0] (5 s)
        both = [t.slot_key(keys[0]), t.slot_key(keys[4])]
        assert t.read_add(both, [(0, 100.0)], [5.0, 600.0], 1, NOW) == [1]
        assert t.read(keys, NOW) == [0, 1, 1, 1, 1]
        assert t.live(NOW) == 4
    finally:
        t.close()


def write_header(path: Path, magic: bytes, version: int, slots: int, window: int) -> None:
    with open(path, "wb") as f:
        f.write(HEADER.pack(magic, version, slots, window).ljust(HEADER_SIZE, b"\0"))
        f.write(b"\0" * 32 * slots)


@pytest.mark.parametrize(
    ("magic", "version", "slots", "size_ok", "message"),
    [
        (b"notours!", 1, 8, True, "not a kongtx counter table"),
        (MAGIC, 99, 8, True, "version 99"),
        (MAGIC, 1, 8, True, "version 1"),
        (MAGIC, VERSION, 8, False, "do not agree"),
    ],
)
def test_bad_header_is_refused(
    tmp_path: Path, magic: bytes, version: int, slots: int, size_ok: bool, message: str
) -> None:
    """Opening a file that is not one of our tables (magic, version, size) raises BadCounterFile."""
    path = tmp_path / "c"
    write_header(path, magic, version, slots, 4)
    if not size_ok:
        with open(path, "ab") as f:
            f.write(b"\0")
    with pytest.raises(BadCounterFile, match=message):
        CounterTable(str(path), create=False)


def test_short_file_and_slot_mismatch_are_refused(tmp_path: Path) -> None:
    """An empty file, or a table of another size than asked for, is refused."""
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(BadCounterFile, match="too short"):
        CounterTable(str(tmp_path / "empty"), create=False)
    CounterTable(str(tmp_path / "c"), create=True, slots=8).close()
    with pytest.raises(BadCounterFile, match="has 8 slots, not 16"):
        CounterTable(str(tmp_path / "c"), create=False, slots=16)
    with pytest.raises(FileNotFoundError):
        CounterTable(str(tmp_path / "absent"), create=False)


def test_create_starts_an_empty_table(table: CounterTable) -> None:
    """create=True replaces an existing table by an empty one; its old mappers keep the old file."""
    digest = key_digest("k")
    table.add([digest], [60.0], 3, NOW)
    fresh = CounterTable(table.path, create=True, slots=8)
    try:
        assert fresh.read([digest], NOW) == [0]
        assert table.read([digest], NOW) == [3]
        with open(table.path, "rb") as f:
            assert struct.unpack_from("<8sIII", f.read(HEADER.size)) == (MAGIC, VERSION, 8, 8)
    finally:
        fresh.close()


# ------------------------------------------------------------ share_local_counters


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "local_counters.shm")
    share_local_counters(path, create=True, slots=4096)
    yield path
    unshare_local_counters()


def test_share_makes_local_counters_shared(shared: str) -> None:
    """After share_local_counters every clock's local counters are the one shared table."""
    clock_a, _ = fake_clock()
    clock_b, _ = fake_clock()
    a, b = local_counters(clock_a), local_counters(clock_b)
    assert isinstance(a, SharedCounters) and isinstance(b, SharedCounters)
    assert local_counters(clock_a) is a
    a.increment_now("api", "me", period_starts(NOW), 1)
    assert b.usage_now("api", "me", period_starts(NOW), ["minute"]) == {"minute": 1}
    unshare_local_counters()
    assert isinstance(local_counters(clock_a), ProcessCounters)


def test_rate_limiting_counts_in_the_shared_table(shared: str) -> None:
    """Two rate-limiting handlers on two node clocks (two processes) spend one quota, synchronously."""
    handlers = []
    for _ in range(2):
        clock, time = fake_clock()
        svc = PluginServices(dao=None, cache=None, clock=clock, reactor=time)
        handlers.append(Handler({"policy": "local", "limit_by": "ip", "minute": 3}, svc))
    statuses = []
    for i in range(4):
        ctx = FakeContext(api=API)
        assert handlers[i % 2].access(ctx) is None
        statuses.append(ctx.response[0] if ctx.response else 200)
    assert statuses == [200, 200, 200, 429]


def test_worker_opens_the_masters_table(shared: str) -> None:
    """create=False on the master's file works; on a foreign file it is refused."""
    share_local_counters(shared, create=False)
    assert isinstance(local_counters(fake_clock()[0]), SharedCounters)
    Path(shared + ".bad").write_bytes(b"x" * 100)
    with pytest.raises(BadCounterFile):
        share_local_counters(shared + ".bad", create=False)


# ------------------------------------------------------------ several real processes

#: a child process: opens the table of argv[1] at time argv[2], says ready, waits for
#: "go", then runs its body argv[3] times (``rounds``) and prints what it says
CHILD = textwrap.dedent(
    """
    import sys
    from twisted.internet.task import Clock as FakeTime
    from kongtx.clock import Clock
    from kongtx.plugins.ratelimit_counters import PERIOD_INDEX, period_starts
    from kongtx.plugins.ratelimit_local import local_counters, share_local_counters

    path, now, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    share_local_counters(path, create=False)
    time = FakeTime()
    time.advance(now)
    counters = local_counters(Clock(time))
    starts = period_starts(now)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    """
)

COUNT_EVERYTHING = """
for _ in range(rounds):
    counters.usage_now("api", "me", starts, ["second", "minute"])
    counters.increment_now("api", "me", starts, 1)
    counters.increment_now("api", "me", starts, 1, "videos")
"""

COUNT_WITHIN_5000 = """
limits = [(PERIOD_INDEX["hour"], 5000.0)]
allowed = 0
for _ in range(rounds):
    if counters.count_within("api", "me", starts, limits, 1)[0] < 5000:
        allowed += 1
sys.stdout.write(f"{allowed}\\n")
"""


def race(path: str, body: str, processes: int = 4, rounds: int = 2000) -> list[bytes]:
    """Run ``body`` in ``processes`` children on the table of ``path``, all at once; their outputs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD + body, path, repr(NOW), str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(processes)
    ]
    try:
        for p in procs:  # all started and mapped: then let them race
            assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        outputs = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            outputs.append(out)
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_four_processes_lose_no_increment(tmp_path: Path) -> None:
    """4 processes each counting the same keys 2,000 times leave exactly 8,000 in every period."""
    path = str(tmp_path / "local_counters.shm")
    master = CounterTable(path, create=True)
    race(path, COUNT_EVERYTHING)
    counters = SharedCounters(fake_clock()[0], master)
    starts = period_starts(NOW)
    try:
        assert counters.usage_now("api", "me", starts, list(PERIODS)) == dict.fromkeys(
            PERIODS, 8000
        )
        assert counters.usage_now("api", "me", starts, list(PERIODS), "videos") == dict.fromkeys(
            PERIODS, 8000
        )
    finally:
        master.close()


def test_four_processes_let_exactly_the_limit_through(tmp_path: Path) -> None:
    """4 processes each asking count_within 2,000 times under an hour limit of 5,000: exactly
    5,000 are let through in all, and every period counted 5,000 (read and add are one step)."""
    path = str(tmp_path / "local_counters.shm")
    master = CounterTable(path, create=True)
    outputs = race(path, COUNT_WITHIN_5000)
    counters = SharedCounters(fake_clock()[0], master)
    try:
        assert sum(int(out) for out in outputs) == 5000
        usage = counters.usage_now("api", "me", period_starts(NOW), list(PERIODS))
        assert usage == dict.fromkeys(PERIODS, 5000)
    finally:
        master.close()


def test_forked_children_lock_apart(tmp_path: Path) -> None:
    """Children forked after the table was opened get their own lock: 4 x 2,000 adds all count."""
    t = CounterTable(str(tmp_path / "c"), create=True)
    digests = [key_digest(f"k-{p}") for p in PERIODS]
    pids = []
    try:
        for _ in range(4):
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child)
                code = 1
                try:
                    for _ in range(2000):
                        t.add(digests, [3600.0] * 6, 1, NOW)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert t.read(digests, NOW) == [8000] * 6
    finally:
        t.close()


def test_remembered_slot_is_not_trusted_after_another_mapping_placed_a_key(
    tmp_path: Path,
) -> None:
    """A key's remembered slot, evicted through another mapping (another process) for a
    new key, is looked up again: the new key's count is not added to."""
    path = str(tmp_path / "c")
    a = CounterTable(path, create=True, slots=4, window=4)
    b = CounterTable(path, create=False)
    try:
        keys = [key_digest(k) for k in colliding_keys(4, 0, 5)]
        mine = [a.slot_key(keys[0])]
        for _ in range(3):  # placed, then found (remembered), then counted in place
            a.read_add(mine, [(0, 100.0)], [5.0], 1, NOW)
        assert a.read([keys[0]], NOW) == [3]
        for digest in keys[1:4]:
            b.add([digest], [3600.0], 1, NOW)
        b.add([keys[4]], [3600.0], 7, NOW)  # the window full: evicts keys[0] (5 s)
        assert a.read_add(mine, [(0, 100.0)], [5.0], 1, NOW) == [0]
        # not 8: keys[0] placed again, evicting keys[4] (its old slot, the first expiring soonest)
        assert b.read(keys, NOW) == [1, 1, 1, 1, 0]
    finally:
        b.close()
        a.close()


def test_remembered_slot_expires(table: CounterTable) -> None:
    """A key counted in its remembered slot starts again once that slot expired."""
    key = [table.slot_key(key_digest("k"))]
    for _ in range(3):
        table.read_add(key, [(0, 100.0)], [1.0], 1, NOW)
    assert table.read_add(key, [(0, 100.0)], [1.0], 1, NOW + 0.5) == [3]
    assert table.read_add(key, [(0, 100.0)], [1.0], 1, NOW + 1) == [0]
    assert table.read([key_digest("k")], NOW + 1) == [1]


def test_placement_count_wraps(table: CounterTable) -> None:
    """The header's placement count wraps at 64 bits instead of failing a placement."""
    table.core.words[3] = 2**63 - 1
    table.add([key_digest("k")], [60.0], 1, NOW)
    assert table.core.words[3] == -(2**63)
    assert table.read([key_digest("k")], NOW) == [1]
