# -*- test-case-name: tests.unit.test_plugin_log_serializer -*-
"""JSON kept per immutable row (FrozenRow): :class:`RowJson`, and :func:`is_frozen`.

The log serializer writes the ``api`` and ``authenticated_entity`` of every message
from the same few rows; the hot path's plugins (key-auth, rate-limiting, the chain's
lineup) remember what they work out from a row by its identity, which is only safe
for rows that can never change in place: :func:`is_frozen` tells them apart cheaply.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from kongtx.store.rows import FrozenRow

__all__ = ["RowJson", "is_frozen"]


#: FrozenRow's own classes (one per shape) and the other row types seen: is it one
_FROZEN_TYPES: dict[type[Any], bool] = {}


def is_frozen(row: Any) -> bool:
    """Whether ``row`` is a FrozenRow (without the ABC's isinstance on every request)."""
    cls = type(row)
    known = _FROZEN_TYPES.get(cls)
    if known is None:
        known = issubclass(cls, FrozenRow)
        if len(_FROZEN_TYPES) < 1024:
            _FROZEN_TYPES[cls] = known
    return known


def _counts(table: dict[int, tuple[Any, str]]) -> dict[int, int]:
    """Each entry's row's reference count (the same code measures the probe below)."""
    return {key: sys.getrefcount(entry[0]) for key, entry in table.items()}


#: the count of a row that only its entry holds (compiled and pure code count differently)
_ALONE = _counts({0: (object(), "")})[0]


class RowJson:
    """A field's JSON for immutable rows (FrozenRow), kept by the row's identity.

    Cached rows are never changed in place (kongtx.store.rows): a changed API or
    credential is a new row object (the router is rebuilt after an ``apis`` change,
    the node cache reloads an invalidated credential), so an entry is valid as long as
    its row is the same object.  An entry holds its row, so its id cannot be reused
    while the entry lives; sweeps (on misses, every miss while the table is small,
    every ``len / 16`` misses when it is large) drop the entries whose row nothing but
    the table holds any more: an entry dies with its row.  Other rows (a dict: a test's,
    a row holding a list) are encoded every time.
    """

    def __init__(self, make: Callable[[Any], str], limit: int = 512) -> None:
        self._make = make
        #: entries kept at most (all dropped when full: more hot rows are re-encoded)
        self.limit = limit
        #: id(row) -> (row, its JSON)
        self.entries: dict[int, tuple[Any, str]] = {}
        self._misses = 0

    def json(self, row: Any) -> str:
        """``make(row)``, from the table when this very row was seen before."""
        if not is_frozen(row):
            return self._make(row)
        key = id(row)
        entries = self.entries
        entry = entries.get(key)
        if entry is not None and entry[0] is row:
            return entry[1]
        text = self._make(row)
        self._misses += 1
        if self._misses * 16 >= len(entries) or len(entries) >= self.limit:
            self._sweep()
        self.entries[key] = (row, text)
        return text

    def _sweep(self) -> None:
        self._misses = 0
        for key, count in _counts(self.entries).items():
            if count <= _ALONE:
                del self.entries[key]
        if len(self.entries) >= self.limit:
            self.entries.clear()
