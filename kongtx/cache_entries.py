# -*- test-case-name: tests.unit.test_cache_clock -*-
"""What an entry of the node cache (:mod:`kongtx.cache`) is: its forms, its mark, its size.

An entry takes one of three forms:

* an :class:`Entry` (value, expiry, size, reference mark): a value with a TTL, or one
  that is neither a row nor a miss;
* a row stored bare: flat row dicts are stored as :class:`kongtx.store.rows.FrozenRow`
  (a slotted read-only mapping, a third of a dict's size; mutating a cached row raises
  ``TypeError``), and one without TTL is stored as is, without an entry object
  (memory, issue 8: 100,000 credentials and their consumers per worker);
* a negative entry (a lookup that found nothing) without TTL, stored bare as the
  marker :data:`NEGATIVE`.

A bare entry's size is recomputed (deterministically: it is immutable) when it leaves
the cache (:func:`bare_size`).

CLOCK's reference mark ("found since the eviction sweep last passed it") lives in the
entry itself, so that a hit moves nothing: ``Entry.hit``, a bare row's class switched
to its hit twin (:data:`kongtx.store.rows.HIT_TWIN`), a bare negative entry's marker
switched to :data:`NEGATIVE_HIT`.  :func:`marked` and :func:`unmarked` set and clear
it.  Compiled with mypyc along with the cache (:data:`kongtx.build_info.HOT_PATH`):
:meth:`kongtx.cache.Cache.peek` reads these forms on every hit.
"""

from __future__ import annotations

from typing import Any, Final

from kongtx.store.rows import COLD_TWIN, HIT_TWIN, FrozenRow

#: The value :meth:`kongtx.cache.Cache.peek` reports for a cached miss is ``None``;
#: this marker is how the entry is stored internally.
NEGATIVE: Any = object()
#: a negative entry stored bare that was found since the sweep last passed it
NEGATIVE_HIT: Any = object()

#: an :class:`Entry`'s expiry when it has no TTL
NO_EXPIRY = float("inf")

_set_class = object.__setattr__
#: the rows' twin tables (a compiled module reads a Final as a C static, an imported
#: name as a lookup in its globals)
_HIT_TWIN: Final[dict[type[Any], type[Any]]] = HIT_TWIN
_COLD_TWIN: Final[dict[type[Any], type[Any]]] = COLD_TWIN


class Entry:
    """A cached value with its expiry and estimated size (the form that is not bare)."""

    __slots__ = ("expires", "hit", "size", "value")

    def __init__(self, value: Any, expires: float, size: int) -> None:
        self.value = value
        self.expires = expires
        self.size = size
        #: found since the eviction sweep last passed it (CLOCK's reference mark)
        self.hit = False


def estimate_size(value: Any, _depth: int = 0) -> int:
    """A cheap, deterministic estimate of the memory an entry holds, in bytes.

    Exactness does not matter; what matters is that a router of 10,000 APIs weighs
    far more than one consumer row, so that ``mem_cache_size`` bounds memory.
    Objects may declare their own weight with a ``cache_size`` attribute.
    """
    declared = getattr(value, "cache_size", None)
    if isinstance(declared, int):
        return declared
    if isinstance(value, FrozenRow):
        return 32 + sum(8 + estimate_size(v, _depth + 1) for v in value.values())
    if isinstance(value, str | bytes):
        return 49 + len(value)
    if isinstance(value, dict):
        if _depth > 8:
            return 64 * len(value)
        return 64 + sum(
            estimate_size(k, _depth + 1) + estimate_size(v, _depth + 1) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        if _depth > 8:
            return 56 + 8 * len(value)
        return 56 + sum(estimate_size(v, _depth + 1) for v in value)
    return 32


def marked(entry: Any) -> Any:
    """``entry`` with its reference mark set (the value to store for a bare entry)."""
    if type(entry) is Entry:
        entry.hit = True
    elif entry is NEGATIVE:
        return NEGATIVE_HIT
    elif entry is not NEGATIVE_HIT:
        hot = _HIT_TWIN.get(type(entry))
        if hot is not None:
            _set_class(entry, "__class__", hot)
    return entry


def unmarked(entry: Any) -> Any:
    """``entry`` with its mark cleared if it had one (the value to store), else ``None``."""
    if type(entry) is Entry:
        if not entry.hit:
            return None
        entry.hit = False
        return entry
    if entry is NEGATIVE_HIT:
        return NEGATIVE
    cold = _COLD_TWIN.get(type(entry))
    if cold is None:
        return None  # NEGATIVE, or a row not found since the sweep passed it
    _set_class(entry, "__class__", cold)
    return entry


def bare_size(key: str, value: Any) -> int:
    """The size of an entry stored without :class:`Entry` (immutable: the same every time)."""
    negative = value is NEGATIVE or value is NEGATIVE_HIT
    return estimate_size(key) + (16 if negative else estimate_size(value))
