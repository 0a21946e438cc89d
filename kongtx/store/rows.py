# -*- test-case-name: tests.unit.test_rows -*-
"""Compact, immutable rows for the node cache (issue 8: memory per cached row).

A worker that has seen 100,000 key-auth clients holds 100,000 credential rows
and 100,000 consumer rows in its cache.  As dicts each costs ~190 bytes of hash
table before its values; as a :class:`FrozenRow` it is one slotted object of
``16 + 8 * columns`` bytes (plus the GC header): the column names live once, in
a class shared by every row of the same shape (same columns in the same order),
as ``namedtuple`` does, but the row is a read-only ``Mapping`` (``row["id"]``,
``row.get(...)``, ``in``, iteration, ``==`` with a dict), not a sequence, so
``json`` never mistakes it for a list.

Rows are not tracked by the cycle collector (they cannot be part of a cycle),
as CPython does for dicts of plain values.  Values are stored as given: a
credential's ``consumer_id`` and its consumer's ``id`` share one string because
the auth plugins load the consumer with the credential's string
(:meth:`kongtx.plugins.auth_common.Lookups.consumer`).  Interning every id value
instead grew the interpreter's table of interned strings by an entry per cached
row, ids no other row shares included: at 200,000 cached rows that table took
more (~8 MB) than the sharing saved.

Each shape has two classes with the same columns and layout: the row :func:`freeze`
gives, and its *hit* twin (:data:`HIT_TWIN`, :data:`COLD_TWIN`).  The node cache
(:class:`kongtx.cache.Cache`, an approximate LRU: CLOCK) switches a cached row's class
to the twin when a lookup finds it and back when its eviction sweep passes it: the
"referenced since" mark every cached row needs, without a byte per row (an extra slot
took 16 bytes a row: 3.2 MB at 200,000).  Nothing else tells the twins apart: same
columns, same ``FrozenRow`` name, both instances of the shape's class.

Cached rows are shared by every request that finds them: a plugin must never
change one in place.  Item assignment, deletion and attribute assignment raise
``TypeError``; ``row.copy()`` (or ``dict(row)``) gives a mutable copy.

:func:`freeze` turns a flat row (a ``dict`` whose values are all ``str``,
``int``, ``float``, ``bool`` or ``None``) into a :class:`FrozenRow` and leaves
anything else as it is (rows holding a nested ``config`` or a list stay dicts).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

_SCALARS = frozenset({str, int, float, bool, type(None)})

#: Row classes by their columns: one class (and one tuple of names) per shape.
_SHAPES: dict[tuple[str, ...], type[FrozenRow]] = {}
#: Shapes kept at most (a table of columns per collection; bounds odd callers).
MAX_SHAPES = 512
#: each shape's class -> its hit twin (the node cache's "found since its sweep passed")
HIT_TWIN: dict[type[Any], type[Any]] = {}
#: each hit twin -> its shape's class
COLD_TWIN: dict[type[Any], type[Any]] = {}

_intern = sys.intern


def _gc_untracker() -> Any:
    """CPython's ``PyObject_GC_UnTrack``, or ``None`` elsewhere."""
    if sys.implementation.name != "cpython":
        return None
    try:
        import ctypes

        untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    except (ImportError, AttributeError):
        return None
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    return untrack


#: A row holds only str/int/float/bool/None: it can never be part of a reference
#: cycle, so the cycle collector need not visit it -- CPython untracks dicts and
#: tuples of such values the same way.  Without this, 200,000 cached rows made a
#: full collection 26 ms instead of 3 ms (the dicts they replace were untracked).
_untrack = _gc_untracker()
_set_attr = object.__setattr__


class FrozenRow(Mapping[str, Any]):
    """A read-only row; each shape (tuple of columns) has its own slotted subclass."""

    __slots__ = ()
    _columns: ClassVar[tuple[str, ...]] = ()
    #: column -> the slot's name (``_0``, ``_1``...: column names may be any string)
    _slot_of: ClassVar[dict[str, str]] = {}

    def __getitem__(self, key: str) -> Any:
        slot = self._slot_of.get(key)
        if slot is None:
            raise KeyError(key)
        return getattr(self, slot)

    def get(self, key: str, default: Any = None) -> Any:
        slot = self._slot_of.get(key)
        if slot is None:
            return default
        return getattr(self, slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a dict

    def __repr__(self) -> str:
        return f"FrozenRow({dict(self.items())!r})"

    def copy(self) -> dict[str, Any]:
        """A mutable copy (a plain dict), as ``dict.copy`` gives."""
        return dict(self.items())

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(self.items())
        merged.update(other)
        return merged

    def __copy__(self) -> FrozenRow:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenRow:
        return self  # immutable, and every value is an immutable scalar

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (dict(self.items()),))

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("a cached row is shared and read-only: copy it (row.copy()) to change it")

    def __delattr__(self, name: str) -> None:
        raise TypeError("a cached row is shared and read-only")

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError("a cached row is shared and read-only: copy it (row.copy()) to change it")

    def __delitem__(self, key: str) -> None:
        raise TypeError("a cached row is shared and read-only")

    # the dict methods that change a dict in place
    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a cached row is shared and read-only: copy it (row.copy()) to change it")

    update = setdefault = pop = popitem = clear = _read_only


def _shape(columns: tuple[str, ...]) -> type[FrozenRow] | None:
    cls = _SHAPES.get(columns)
    if cls is None:
        if len(_SHAPES) >= MAX_SHAPES:
            return None
        columns = tuple(_intern(c) for c in columns)
        slots = tuple(f"_{i}" for i in range(len(columns)))
        cls = type(
            "FrozenRow",
            (FrozenRow,),
            {
                "__slots__": slots,
                "_columns": columns,
                "_slot_of": dict(zip(columns, slots, strict=True)),
                "__module__": __name__,
            },
        )
        _SHAPES[columns] = cls
        hot = type("FrozenRow", (cls,), {"__slots__": (), "__module__": __name__})
        HIT_TWIN[cls] = hot
        COLD_TWIN[hot] = cls
    return cls


def freeze(value: Any) -> Any:
    """A :class:`FrozenRow` of a flat row dict; anything else unchanged."""
    if type(value) is not dict or not value:
        return value
    for v in value.values():
        if type(v) not in _SCALARS:
            return value
    cls = _shape(tuple(value))
    if cls is None:
        return value
    row = object.__new__(cls)
    slots: tuple[str, ...] = cls.__slots__
    for slot, v in zip(slots, value.values(), strict=True):
        _set_attr(row, slot, v)
    if _untrack is not None:
        _untrack(row)
    return row


def _rebuild(data: dict[str, Any]) -> Any:
    return freeze(data)
