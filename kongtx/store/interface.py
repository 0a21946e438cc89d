# -*- test-case-name: tests.store -*-
"""The datastore contract every backend (memory, sqlite, postgres, cassandra) honours.

Why one narrow interface: the Admin API, the caches and the cluster all speak to
"the store" and must not care which server sits behind it.  Backends differ in how
they keep uniqueness, foreign keys, TTLs and paging; those differences stay behind
this line (STYLE.md rule 16) and one contract suite (tests/store) holds every
backend to the same behaviour.

Rows are plain dicts of JSON-able Python values keyed by column name: uuids are
lower-case ``str``, ``created_at`` is epoch **milliseconds** (``int``), booleans are
``bool``, JSON columns (``config``, ``redirect_uri``...) are ``dict``/``list``.  A row
returned by the store always carries every column of its table; a NULL is ``None``.
Validation and defaults are not the store's job: the DAO (kongtx.dao) does them
before calling the store.

Every write also appends, in the same transaction, one :class:`ChangeEvent` per
changed row (cascaded deletions included) to the durable ``cluster_events`` log,
stamped with this store's ``origin`` (the node name) and a per-origin monotonic
``seq``.  That log is what makes invalidations impossible to lose (DESIGN.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from zope.interface import Attribute, Interface

Row = dict[str, Any]
#: A row as the node cache hands it out: flat rows are kept as a read-only
#: ``kongtx.store.rows.FrozenRow``, a Mapping and not a dict.  Code that only reads rows
#: it got from the cache takes this type: compiled with mypyc (issue 8), a ``dict``
#: parameter is checked at run time and a FrozenRow fails the check.
RowView = Mapping[str, Any]
ChangeType = Literal["create", "update", "delete"]


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of every error a store raises on purpose."""


class UniqueViolation(StoreError):
    """A unique column (or the primary key) already holds ``value``.

    The Admin API turns it into 409 ``{"<field>":"already exists with value '<value>'"}``.
    """

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} already exists with value '{value}'")
        self.field = field
        self.value = value


class ForeignKeyViolation(StoreError):
    """A foreign-key column names a row that does not exist.

    The Admin API turns it into 404 ``{"<field>":"does not exist with value '<value>'"}``.
    """

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} does not exist with value '{value}'")
        self.field = field
        self.value = value


class StoreUnavailable(StoreError):
    """The server cannot be reached, or did not answer in time.

    Raised quickly (every query has a timeout) so that Admin writes fail fast with a
    clean 5xx while the proxy keeps serving from its cache.
    """


class InvalidOffset(StoreError):
    """A paging ``offset`` token that this store did not produce."""


# --------------------------------------------------------------------------- tables


ColumnType = Literal["uuid", "text", "boolean", "integer", "number", "timestamp", "json"]


@dataclass(frozen=True)
class Column:
    """One column.  ``json`` columns hold any JSON value (dict, list...)."""

    name: str
    type: ColumnType


@dataclass(frozen=True)
class ForeignKey:
    """``column`` references ``table.target``; deleting the target deletes this row."""

    column: str
    table: str
    target: str = "id"


@dataclass(frozen=True)
class Table:
    """What a backend needs to know of a table to store, find and check its rows.

    ``unique`` lists single columns whose non-NULL values must be distinct
    (enforced by every backend alike; SPEC's Postgres gaps for ``custom_id`` and
    basic-auth ``username`` are closed on purpose).  Multi-column rules (one plugin
    config per name/api/consumer, one acl group per consumer) are the DAO's job.
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)
    unique: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    #: rows of this table may be written with a TTL (seconds).
    ttl: bool = False

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Page:
    """One page of a listing.

    ``offset`` is the opaque token for the next page, ``None`` on the last page.
    ``total`` is the count of all rows matching the same filters.
    """

    rows: list[Row]
    total: int
    offset: str | None = None


@dataclass(frozen=True)
class ChangeEvent:
    """One entry of the durable invalidation log.

    ``old`` is the row before the change (``None`` for a create), ``new`` the row
    after it (``None`` for a delete).  ``at`` is epoch milliseconds.
    """

    origin: str
    seq: int
    at: int
    collection: str
    type: ChangeType
    old: Row | None = None
    new: Row | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- contract


class IStore(Interface):
    """An asynchronous datastore.  Every method is an ``async def``.

    A backend is constructed with (at least) ``tables`` (name -> :class:`Table`,
    core and plugin-owned alike: it needs them all to cascade deletions), its
    ``origin`` and an ``IReactorTime`` for TTLs and timeouts.  Table arguments
    below are table names; an unknown name raises ``KeyError``.

    No method blocks the reactor thread, and every method fails with
    :class:`StoreUnavailable` within the backend's timeout when the server is
    gone.  Filters are equality filters on columns, ANDed; ``None`` matches NULL.
    An unknown column name (in a row, key, filter or values) raises ``KeyError``.
    Listings (``select``, ``page``) come in a stable order that paging follows
    without skipping or repeating rows (SQL backends: ``created_at`` then the
    primary key, ``kongtx.store.tables.order_columns``).  The shared rules (key
    checks, TTL checks, paging tokens) live in ``kongtx.store.tables``.
    """

    name = Attribute("Backend name: 'memory', 'sqlite', 'postgres' or 'cassandra'.")
    tables = Attribute("Mapping of table name -> Table, given to the constructor.")
    origin = Attribute("Node name stamped on every ChangeEvent this store writes.")

    async def start() -> None:
        """Connect.  Does not migrate (see ``migrate``)."""

    async def stop() -> None:
        """Disconnect and release threads and timers."""

    async def migrate(migrations: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
        """Run pending migrations under a lock so concurrent starters migrate once.

        ``migrations`` maps an identifier (``core``, then each plugin) to its
        ordered ``(name, script)`` list.  Returns ``"<identifier>: <name>"`` for each
        migration run now; ``[]`` when up to date (idempotent).
        """

    async def executed_migrations() -> dict[str, list[str]]:
        """Identifier -> names already run, from ``schema_migrations``."""

    async def reset() -> None:
        """Drop every table this store created (``kong migrations reset``)."""

    async def insert(table: str, row: Row, ttl: int | None = None) -> Row:
        """Insert ``row`` (every column given; missing ones are NULL) and return it.

        Raises UniqueViolation / ForeignKeyViolation.  With ``ttl`` (seconds) the
        row disappears from every read after that time, and no longer holds its
        unique values.  ``ttl`` must be > 0 and the table TTL-capable (else
        ``ValueError``); expiry logs no event.  Appends a ``create`` event.
        """

    async def get(table: str, key: Mapping[str, Any]) -> Row | None:
        """The row whose columns equal ``key`` (its primary key or one unique column).

        ``key`` must hold the whole primary key or a non-NULL unique column
        (else ``ValueError``); other columns given are extra equality conditions.
        """

    async def select(table: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every row matching ``filters`` (unpaged; for caches and cascades)."""

    async def page(table: str, filters: Mapping[str, Any], size: int, offset: str | None) -> Page:
        """One page of rows matching ``filters``; raises InvalidOffset on a bad token.

        ``size`` must be >= 1 (else ``ValueError``).  ``offset`` is ``None`` for the
        first page; a page that ends the listing carries no token.
        """

    async def count(table: str, filters: Mapping[str, Any]) -> int:
        """How many rows match ``filters``."""

    async def update(
        table: str, key: Mapping[str, Any], values: Row, ttl: int | None = None
    ) -> Row | None:
        """Set the given columns of the row with primary key ``key``; return the new row.

        Columns absent from ``values`` are left unchanged (the DAO passes every
        column, with ``None``, for a full replace).  ``None`` when no such row.
        A primary-key column may only be given its current value (else
        ``ValueError``).  ``ttl`` restarts the row's TTL; without it the row keeps
        the expiry it had.  Raises UniqueViolation / ForeignKeyViolation.
        Appends an ``update`` event.
        """

    async def delete(table: str, key: Mapping[str, Any]) -> list[tuple[str, Row]]:
        """Delete the row with primary key ``key`` and, by cascade, every row that
        references it.  Returns what was deleted, the named row first; ``[]`` when
        nothing matched.  Appends one ``delete`` event per deleted row.
        """

    async def events_after(origin: str, seq: int, limit: int) -> list[ChangeEvent]:
        """Events of ``origin`` with a sequence number greater than ``seq``, in order."""

    async def events_since(at: int, limit: int) -> list[ChangeEvent]:
        """Events of every origin stamped at or after ``at`` (ms), by (at, origin, seq)."""

    async def prune_events(before: int) -> int:
        """Delete events stamped before ``before`` (ms); return how many."""

    async def ping() -> None:
        """A cheap round-trip; raises StoreUnavailable when the server is gone."""

    async def increment_counters(
        table: str, keys: Sequence[Mapping[str, Any]], amount: int
    ) -> None:
        """Add ``amount`` to the integer ``value`` column of each row named by ``keys``.

        For counter tables (``ratelimiting_metrics``...): each key holds the whole
        primary key; a missing row counts as 0 and is created.  Each key's increment
        is atomic (two nodes adding at once never lose one), which is what the
        rate-limiting ``cluster`` policy needs; the keys are not one transaction.
        Counters log no change event (they are traffic, not configuration), never
        expire, and a key missing a primary-key column raises ``ValueError``.
        """

    async def read_counters(table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """The ``value`` of each row named by ``keys``, in order; 0 for a missing row."""
