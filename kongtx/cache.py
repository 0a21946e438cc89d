# -*- test-case-name: tests.unit.test_cache -*-
"""The node's in-memory entity cache (DESIGN.md §4, STYLE.md rule 13).

Kong 0.9 kept entities in an nginx shared dict that never expired and filled
misses under a lock.  We keep the good parts and close the holes:

* bounded: past ``max_bytes`` (``mem_cache_size``) entries not used lately are
  evicted (an approximate LRU, below), sizes estimated once when an entry is stored;
* optional per-entry TTL on the injected clock;
* negative entries, so a lookup that found nothing is not repeated per request;
* concurrent misses of one key collapse into one load, and every waiter gets its
  own Deferred (cancelling one waiter never cancels the load for the others);
* a load that started before an invalidation of its key never stores its value:
  the invalidation forgets the in-flight load, and the load stores only if it is
  still the one registered for the key.

The hot path is :meth:`Cache.peek`: synchronous, no Deferred, no allocation
beyond the returned tuple.

Eviction is CLOCK (second chance), an approximate LRU: the entries live in one plain
dict in the order they were stored; a hit only marks its entry ("referenced since the
sweep last passed it", a mark kept in the entry itself), it moves nothing.  To make
room, the sweep takes the oldest entries: a marked one loses its mark and moves to the
recent end (once), an unmarked one is evicted.  So an entry found since the sweep last
passed it outlives every entry not found since, and each eviction costs O(1) amortised
(each move was paid for by the hit that set its mark).  One eviction gives at most
:data:`SECOND_CHANCES` (128): past a run that long of marked entries at the front
(every entry found lately) the next one goes, marked or not, so that no store stalls
the reactor (an unbounded sweep moved 100,000 marked entries in one store: 75 ms).  The
sweep reads the dict's oldest entries a slice at a time (``_hand``, 1/64 of the
entries, at least :data:`HAND_MIN`): the evicted ones leave holes at the dict's front
until it next resizes, and a slice skips them once for many evictions.  Nothing moves
on a hit, so the dict resizes only in :meth:`Cache.set`, as it grows or after
evictions and moves.
(The ``OrderedDict`` this replaces cost 18.3 MB at 200,000 entries against 7.7 MB: a
linked-list node per entry, and a move per hit.)

What an entry is (an ``Entry`` with TTL, or a read-only row or a negative marker
stored bare, issue 8's memory), how it carries CLOCK's mark and how its size is
estimated: :mod:`kongtx.cache_entries`.

The C heap (issue 8): a dict that grows past its table allocates a table
twice as large and frees the old one, and glibc keeps those freed pages (megabytes
at 100,000s of entries; a replaced router too).  A moment (:data:`RELEASE_DELAY`)
after the cache grew by a quarter from :data:`RELEASE_FROM` entries, stored a value
estimated at :data:`RELEASE_LARGE` bytes or more, or was flushed with that many
entries, :func:`kongtx.gc_tuning.release_free_memory` gives them back: on the clock,
once for all that happened meanwhile, never inside :meth:`Cache.peek` or a request.

Invalidation listeners (:meth:`Cache.add_invalidation_listener`) are told, after the
cache did its own work, of every :meth:`~Cache.invalidate`,
:meth:`~Cache.invalidate_prefix` and :meth:`~Cache.flush`, whoever called it (the DAO
listener, the cluster stream, ``DELETE /cache``): that is how a node's workers follow
its cache (:func:`kongtx.workers.master.fan_out`).  The module is compiled with mypyc
(:data:`kongtx.build_info.HOT_PATH`): a compiled :class:`Cache` cannot be subclassed
by interpreted code, nor its methods replaced on an instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from kongtx.cache_entries import (
    NEGATIVE,
    NEGATIVE_HIT,
    NO_EXPIRY,
    Entry,
    bare_size,
    estimate_size,
    marked,
    unmarked,
)
from kongtx.clock import Clock
from kongtx.gc_tuning import release_free_memory
from kongtx.log import logger
from kongtx.store.rows import HIT_TWIN, FrozenRow, freeze

log = logger("kongtx.cache")

#: entries from which growth by a quarter gives the C heap's free pages back
RELEASE_FROM = 16_384
#: an estimated size (bytes) from which storing one value does so too (a router)
RELEASE_LARGE = 2**20
#: seconds between what asked for that and the release (one release for all of it)
RELEASE_DELAY = 1.0

#: entries the eviction sweep reads at least at a time (else 1/:data:`HAND_SHARE`)
HAND_MIN = 256
HAND_SHARE = 64
#: second chances one eviction gives at most: past them it evicts the next entry,
#: marked or not (the cost of a store stays bounded when every entry was found lately)
SECOND_CHANCES = 128

_set_class = object.__setattr__
#: the rows' hit twins (a compiled module reads a Final as a C static, an imported
#: name as a lookup in its globals: a hit reads _HIT_TWIN)
_HIT_TWIN: Final[dict[type[Any], type[Any]]] = HIT_TWIN


class InvalidationListener(Protocol):
    """Told of a cache's invalidations, each after the cache did its own (same arguments)."""

    def invalidate(self, key: str) -> None: ...

    def invalidate_prefix(self, prefix: str) -> None: ...

    def flush(self) -> None: ...


def _listener_failed(listener: InvalidationListener, what: str, arg: str) -> None:
    """Log the error a listener raised (called in its ``except``): the cache and the
    other listeners carry on."""
    log.failure(
        "cache listener {listener!r} failed on {what}({arg!r})",
        listener=listener,
        what=what,
        arg=arg,
    )


class _Load:
    """One in-flight load of a key and the callers waiting for it."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[Deferred[Any]] = []


class Cache:
    """An approximate-LRU (CLOCK) cache bounded by an estimate of its size in bytes."""

    def __init__(self, clock: Clock, max_bytes: int = 128 * 2**20) -> None:
        self._clock = clock
        self.max_bytes = max_bytes
        self._entries: dict[str, Any] = {}  # Entry, or a bare row or negative marker
        #: the eviction sweep: the oldest (key, entry) pairs read, and the next one's index
        self._hand: list[Any] = []
        self._hand_at = 0
        self._inflight: dict[str, _Load] = {}
        self.size = 0
        #: counters for /status and the benchmarks
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: the entry count that next asks for a release (kongtx.gc_tuning), and that call
        self._release_at = RELEASE_FROM
        self._release: Any = None
        self._listeners: tuple[InvalidationListener, ...] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return self.peek(key)[0]

    def keys(self) -> list[str]:
        """The keys currently held (expired ones included until touched)."""
        return list(self._entries)

    # ------------------------------------------------------------------ reads

    def peek(self, key: str) -> tuple[bool, Any]:
        """``(hit, value)``; a negative entry is a hit whose value is ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return False, None
        if type(entry) is Entry:
            if entry.expires != NO_EXPIRY and entry.expires <= self._clock.seconds():
                self._drop(key)
                self.misses += 1
                return False, None
            value = entry.value
            entry.hit = True
        elif entry is NEGATIVE or entry is NEGATIVE_HIT:  # stored bare (no TTL)
            if entry is NEGATIVE:
                self._entries[key] = NEGATIVE_HIT  # same place in the dict: nothing moves
            self.hits += 1
            return True, None
        else:
            value = entry  # a row stored bare (no TTL)
            hot = _HIT_TWIN.get(type(value))
            if hot is not None:
                _set_class(value, "__class__", hot)
        self.hits += 1
        return True, (None if value is NEGATIVE else value)

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        negative: bool = True,
    ) -> Any:
        """The cached value of ``key``, loading it once if missing.

        ``loader`` returning ``None`` means "not found": cached as a negative entry
        unless ``negative`` is false.  A loader failure reaches every waiter and
        stores nothing.
        """
        hit, value = self.peek(key)
        if hit:
            return value
        load = self._inflight.get(key)
        start = load is None
        if load is None:
            load = self._inflight[key] = _Load()
        waiter: Deferred[Any] = Deferred(
            lambda d: load.waiters.remove(d) if d in load.waiters else None
        )
        load.waiters.append(waiter)
        if start:
            d = ensureDeferred(_call(loader))
            d.addBoth(self._completed, key, load, ttl, negative)
        return await waiter

    def _completed(
        self, result: Any, key: str, load: _Load, ttl: float | None, negative: bool
    ) -> None:
        if not isinstance(result, Failure):
            # every waiter, the first one too, gets what the cache holds (a read-only row)
            result = freeze(result)
        if self._inflight.get(key) is load:
            del self._inflight[key]
            if not isinstance(result, Failure) and (result is not None or negative):
                self.set(key, NEGATIVE if result is None else result, ttl)
        waiters, load.waiters = load.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    # ----------------------------------------------------------------- writes

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (``None`` stores a negative entry) for ``ttl`` seconds.

        A flat dict (plain values only) is stored, and later returned, as a
        read-only :class:`~kongtx.store.rows.FrozenRow`: cache a value you mean to
        change in place as something else (or keep it outside the cache).
        """
        value = NEGATIVE if value is None else freeze(value)
        entries = self._entries
        replaced = key in entries
        if replaced:
            self._drop(key)
        entry: Any
        if ttl is None and (value is NEGATIVE or isinstance(value, FrozenRow)):
            size = bare_size(key, value)
            entry = value
        else:
            expires = NO_EXPIRY if ttl is None else self._clock.seconds() + ttl
            size = estimate_size(key) + (16 if value is NEGATIVE else estimate_size(value))
            entry = Entry(value, expires, size)
        # room first (the new entry is never the one evicted: as many others go as needed)
        while self.size + size > self.max_bytes and entries:
            self._evict_one()
        if replaced:
            entry = marked(entry)  # stored again: as recent as a hit
        entries[key] = entry
        self.size += size
        if len(entries) >= self._release_at or size >= RELEASE_LARGE:
            self._release_soon()

    def invalidate(self, key: str) -> None:
        """Forget ``key`` and any load of it already in flight; then tell the listeners."""
        self._inflight.pop(key, None)
        if key in self._entries:
            self._drop(key)
        for listener in self._listeners:
            try:
                listener.invalidate(key)
            except Exception:
                _listener_failed(listener, "invalidate", key)

    def invalidate_prefix(self, prefix: str) -> None:
        """Forget every key starting with ``prefix`` (and their in-flight loads); tell the listeners."""
        for key in [k for k in self._inflight if k.startswith(prefix)]:
            del self._inflight[key]
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self._drop(key)
        for listener in self._listeners:
            try:
                listener.invalidate_prefix(prefix)
            except Exception:
                _listener_failed(listener, "invalidate_prefix", prefix)

    def flush(self) -> None:
        """Forget everything (``DELETE /cache``, a full purge); then tell the listeners."""
        self._inflight.clear()
        if len(self._entries) >= RELEASE_FROM:
            self._release_soon()
        self._entries.clear()
        self._hand = []
        self._hand_at = 0
        self.size = 0
        self._release_at = RELEASE_FROM
        for listener in self._listeners:
            try:
                listener.flush()
            except Exception:
                _listener_failed(listener, "flush", "")

    # -------------------------------------------------------------- listeners

    def add_invalidation_listener(self, listener: InvalidationListener) -> None:
        """Tell ``listener`` of every later invalidation and flush (once per add)."""
        self._listeners = (*self._listeners, listener)

    def remove_invalidation_listener(self, listener: InvalidationListener) -> None:
        """Stop telling ``listener`` (a listener never added: nothing happens)."""
        listeners = list(self._listeners)
        if listener in listeners:
            listeners.remove(listener)
            self._listeners = tuple(listeners)

    def _release_soon(self) -> None:
        """Give the C heap's free pages back in :data:`RELEASE_DELAY` (once for all asks)."""
        count = len(self._entries)
        self._release_at = max(RELEASE_FROM, count + count // 4)
        if self._release is None:
            self._release = self._clock.call_later(RELEASE_DELAY, self._released)

    def _released(self) -> None:
        self._release = None
        release_free_memory()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.size -= entry.size if type(entry) is Entry else bare_size(key, entry)

    def _evict_one(self) -> None:
        """CLOCK's sweep: evict the oldest entry not found since the sweep last passed it.

        Marked entries met on the way lose their mark and move to the recent end, at
        most :data:`SECOND_CHANCES` of them: then the next entry goes, marked or not.
        (Unbounded, a store that found every entry marked -- all of them found since
        the sweep's last pass, as when every client came back -- would move them all
        before evicting one: 75 ms at 200,000 entries.)  The cache must not be empty.
        """
        entries = self._entries
        chances = SECOND_CHANCES
        while True:
            hand = self._hand
            at = self._hand_at
            if at >= len(hand):
                # the oldest entries (the dict's order), a slice at a time: the scan
                # over the holes evictions left at the front is paid once per slice
                count = max(HAND_MIN, len(entries) // HAND_SHARE)
                hand = self._hand = list(islice(entries.items(), count))
                at = 0
            key, entry = hand[at]
            hand[at] = None  # the sweep holds no entry it passed
            self._hand_at = at + 1
            if entries.get(key) is not entry:
                continue  # removed or stored again since the slice was read
            if chances:
                cleared = unmarked(entry)
                if cleared is not None:
                    del entries[key]  # the second chance: to the recent end, mark cleared
                    entries[key] = cleared
                    chances -= 1
                    continue
            self._drop(key)
            self.evictions += 1
            return


async def _call(loader: Callable[[], Awaitable[Any]]) -> Any:
    return await loader()
