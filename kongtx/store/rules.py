# -*- test-case-name: tests.store.test_contract -*-
"""Rules every backend applies the same way, kept apart from the table shapes they read.

The memory fake and the real stores share these so that they cannot drift apart:
:func:`check_tables` (a table map is self-consistent), the call checks
(:func:`check_columns`, :func:`check_key`, :func:`check_ttl`), the listing order and
its opaque paging tokens (:func:`order_columns`, :func:`encode_offset`,
:func:`decode_offset`), the one text form of JSON, and the tag filter.  The tables
themselves are :mod:`kongtx.store.tables`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kongtx.store.interface import InvalidOffset, Row, Table


def check_tables(tables: Mapping[str, Table]) -> None:
    """Raise ``ValueError`` unless ``tables`` is self-consistent.

    Every backend calls this at construction: a foreign key to a table that is
    not in the map could never cascade, and a key or unique column that is not a
    column would fail only at the first write.
    """
    for name, table in tables.items():
        if name != table.name:
            raise ValueError(f"table {table.name!r} registered as {name!r}")
        cols = set(table.column_names)
        for col in (*table.primary_key, *table.unique):
            if col not in cols:
                raise ValueError(f"{name}: key column {col!r} is not a column")
        for fk in table.foreign_keys:
            if fk.column not in cols:
                raise ValueError(f"{name}: foreign key column {fk.column!r} is not a column")
            target = tables.get(fk.table)
            if target is None:
                raise ValueError(f"{name}.{fk.column} references unknown table {fk.table!r}")
            if fk.target not in target.column_names:
                raise ValueError(f"{name}.{fk.column} references unknown column {fk.target!r}")


# --------------------------------------------------------------------------- row helpers
#
# Rules every backend applies the same way, kept next to the table shapes so that
# the memory fake and the real stores cannot drift apart.


def check_columns(table: Table, names: Iterable[str]) -> None:
    """Raise ``KeyError`` naming the first of ``names`` that is not a column of ``table``.

    Backends build SQL from column names, so an unknown name must never reach a
    query; the Admin API has already turned unknown filters into a 400.
    """
    cols = table.column_names
    for name in names:
        if name not in cols:
            raise KeyError(f"{table.name} has no column {name!r}")


def check_key(table: Table, key: Mapping[str, Any]) -> None:
    """Raise unless ``key`` names at most one row of ``table``.

    A key holds the whole primary key, or a non-NULL value of one unique column;
    any other column given is an extra equality condition.
    """
    check_columns(table, key)
    if all(key.get(c) is not None for c in table.primary_key):
        return
    if any(key.get(c) is not None for c in table.unique):
        return
    raise ValueError(
        f"{table.name}: a key needs the primary key {table.primary_key} or a unique column"
    )


def check_ttl(table: Table, ttl: int | None) -> None:
    """Raise ``ValueError`` for a TTL on a table without TTLs, or a TTL that is not > 0."""
    if ttl is None:
        return
    if not table.ttl:
        raise ValueError(f"{table.name} rows cannot have a TTL")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise ValueError(f"a TTL must be a positive number of seconds, not {ttl!r}")


def order_columns(table: Table) -> tuple[str, ...]:
    """The columns listings are ordered by: ``created_at`` (when the table has it), then the key.

    Oldest first, like Kong's Cassandra listings, and total because the primary
    key breaks ties, so keyset paging neither skips nor repeats a row.
    """
    pk = table.primary_key
    if "created_at" in table.column_names and "created_at" not in pk:
        return ("created_at", *pk)
    return pk


def sort_key(table: Table, row: Row) -> tuple[tuple[int, Any], ...]:
    """A Python sort key matching SQL ``ORDER BY`` on :func:`order_columns` (NULLs first)."""
    return tuple((0, 0) if row.get(c) is None else (1, row[c]) for c in order_columns(table))


def encode_offset(table: Table, row: Row) -> str:
    """The opaque paging token that resumes a listing after ``row``.

    base64url (no padding, so it needs no escaping in a ``next`` URL) of the
    row's position in :func:`order_columns`; callers must not look inside.
    """
    values = [row.get(c) for c in order_columns(table)]
    raw = json.dumps(["k1", *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_offset(table: Table, token: str) -> list[Any]:
    """The position an :func:`encode_offset` token names; ``InvalidOffset`` for anything else."""
    if not isinstance(token, str) or not token:
        raise InvalidOffset(f"invalid offset {token!r}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise InvalidOffset(f"invalid offset {token!r}") from e
    cols = order_columns(table)
    if not isinstance(decoded, list) or len(decoded) != len(cols) + 1 or decoded[0] != "k1":
        raise InvalidOffset(f"invalid offset {token!r}")
    values: list[Any] = decoded[1:]
    for col, value in zip(cols, values, strict=True):
        kind = table.column(col).type
        if value is None:
            continue
        if kind in ("integer", "timestamp") and not (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            raise InvalidOffset(f"invalid offset {token!r}")
        if kind in ("text", "uuid") and not isinstance(value, str):
            raise InvalidOffset(f"invalid offset {token!r}")
        if kind not in ("integer", "timestamp", "text", "uuid"):
            raise InvalidOffset(f"invalid offset {token!r}")
    return values


def after_position(table: Table, row: Row, position: Sequence[Any]) -> bool:
    """Whether ``row`` sorts strictly after a decoded paging ``position``."""
    mark = tuple((0, 0) if v is None else (1, v) for v in position)
    return sort_key(table, row) > mark


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value, so equal values compare equal as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- tags
#
# Kong 1.1's tag filter (``?tags=a,b`` all of them, ``?tags=a/b`` any of them) is the
# one filter that is not an equality: it travels through the store's ``filters``
# mapping as a :class:`TagFilter` value under the ``tags`` column, so paging, totals
# and the other filters keep working unchanged.

#: The column that holds an entity's tags (a JSON array of strings, or NULL).
TAGS_COLUMN = "tags"


@dataclass(frozen=True)
class TagFilter:
    """Rows whose ``tags`` hold all (``mode="all"``) or any (``mode="any"``) of ``tags``.

    Frozen and made of a tuple so that its ``repr`` is stable: Cassandra folds the
    filters into its paging token and must see the same query on the next page.
    """

    tags: tuple[str, ...]
    mode: Literal["all", "any"] = "all"

    def matches(self, value: Any) -> bool:
        """Whether a stored ``tags`` value (a list, or None) passes this filter."""
        held = set(value) if isinstance(value, list) else set()
        if self.mode == "all":
            return all(t in held for t in self.tags)
        return any(t in held for t in self.tags)


def matches_filter(value: Any, wanted: Any) -> bool:
    """Whether a row's (decoded) column ``value`` passes the filter value ``wanted``.

    Python-side matching for the memory store and for filters Cassandra cannot
    push down: a :class:`TagFilter` tests membership, anything else is equality.
    """
    if isinstance(wanted, TagFilter):
        return wanted.matches(value)
    return bool(value == wanted)
