# -*- test-case-name: tests.store.test_contract -*-
"""Every table kongtx stores, core and plugin-owned, as the backends see them.

Why one map for all: a backend must know every table to cascade a deletion
(deleting a consumer deletes its key-auth credentials, its oauth2 applications
and, through those, their tokens), whether or not the plugin that owns the
child table is enabled on this node.  Shapes follow SPEC §2 and §7.1; the
datastore-specific SQL/CQL lives in ``kongtx/store/schema/<backend>/`` and must
agree with this file (the contract suite checks the sqlite schema against it).

Two internal tables are not listed in :data:`TABLES` because no caller reads
them through the store's CRUD methods: ``schema_migrations`` (what migrations
ran) and ``cluster_events`` (the durable invalidation log, DESIGN.md §4).
:data:`CLUSTER_EVENTS` and :data:`SCHEMA_MIGRATIONS` describe them for
backends that want a shape to build from.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kongtx.store.interface import Column, ColumnType, ForeignKey, InvalidOffset, Row, Table


def _cols(*spec: tuple[str, ColumnType]) -> tuple[Column, ...]:
    return tuple(Column(name, kind) for name, kind in spec)


_ID: tuple[str, ColumnType] = ("id", "uuid")
_CREATED_AT: tuple[str, ColumnType] = ("created_at", "timestamp")
_CONSUMER_FK = ForeignKey("consumer_id", "consumers")
#: Kong 1.1's ``tags``: a JSON array of strings on every Admin-managed entity.
_TAGS: tuple[str, ColumnType] = ("tags", "json")


def _credentials(name: str, *columns: tuple[str, ColumnType], unique: tuple[str, ...]) -> Table:
    """A plugin credential table: id, created_at, consumer_id (cascading) + its own columns."""
    return Table(
        name=name,
        columns=_cols(_ID, _CREATED_AT, ("consumer_id", "uuid"), *columns, _TAGS),
        unique=unique,
        foreign_keys=(_CONSUMER_FK,),
    )


def _metrics(name: str) -> Table:
    """A rate-limiting counter table: one row per (api, identifier, period start, period)."""
    return Table(
        name=name,
        columns=_cols(
            ("api_id", "uuid"),
            ("identifier", "text"),
            ("period_date", "timestamp"),
            ("period", "text"),
            ("value", "integer"),
        ),
        primary_key=("api_id", "identifier", "period_date", "period"),
    )


_ALL: tuple[Table, ...] = (
    # ---------------------------------------------------------------- core
    Table(
        name="apis",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("name", "text"),
            ("request_host", "text"),
            ("request_path", "text"),
            ("strip_request_path", "boolean"),
            ("preserve_host", "boolean"),
            ("upstream_url", "text"),
            _TAGS,
        ),
        unique=("name", "request_host", "request_path"),
    ),
    Table(
        name="consumers",
        columns=_cols(_ID, _CREATED_AT, ("username", "text"), ("custom_id", "text"), _TAGS),
        # custom_id is unique on every backend: SPEC's Postgres gap is closed on purpose.
        unique=("username", "custom_id"),
    ),
    Table(
        name="plugins",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("name", "text"),
            ("api_id", "uuid"),
            ("consumer_id", "uuid"),
            ("config", "json"),
            ("enabled", "boolean"),
            _TAGS,
        ),
        # Kong's (id, name) key is a DAO rule for PUT; the store keys plugins by id.
        primary_key=("id",),
        foreign_keys=(ForeignKey("api_id", "apis"), _CONSUMER_FK),
    ),
    # Kong 1.x's load balancing entities (issue 9): an upstream names a virtual host
    # that an API's upstream_url may point at; its targets are the host:port pairs
    # balanced over.  (upstream_id, target) is unique: the DAO checks that pair.
    Table(
        name="upstreams",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("name", "text"),
            ("algorithm", "text"),
            ("hash_on", "text"),
            ("hash_fallback", "text"),
            ("hash_on_header", "text"),
            ("hash_fallback_header", "text"),
            ("slots", "integer"),
            ("healthchecks", "json"),
            _TAGS,
        ),
        unique=("name",),
    ),
    Table(
        name="targets",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("upstream_id", "uuid"),
            ("target", "text"),
            ("weight", "integer"),
            _TAGS,
        ),
        foreign_keys=(ForeignKey("upstream_id", "upstreams"),),
    ),
    Table(
        name="nodes",
        columns=_cols(("name", "text"), ("cluster_listening_address", "text"), _CREATED_AT),
        primary_key=("name",),
        ttl=True,
    ),
    # ------------------------------------------------------- plugin-owned
    _credentials("keyauth_credentials", ("key", "text"), unique=("key",)),
    _credentials(
        "basicauth_credentials",
        ("username", "text"),
        ("password", "text"),
        # unique on every backend (SPEC's Postgres gap closed on purpose)
        unique=("username",),
    ),
    _credentials(
        "hmacauth_credentials", ("username", "text"), ("secret", "text"), unique=("username",)
    ),
    _credentials(
        "jwt_secrets",
        ("key", "text"),
        ("secret", "text"),
        ("rsa_public_key", "text"),
        ("algorithm", "text"),
        unique=("key", "secret"),
    ),
    _credentials(
        "oauth2_credentials",
        ("name", "text"),
        ("client_id", "text"),
        ("client_secret", "text"),
        ("redirect_uri", "json"),
        unique=("client_id", "client_secret"),
    ),
    Table(
        name="oauth2_authorization_codes",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("credential_id", "uuid"),
            ("code", "text"),
            ("authenticated_userid", "text"),
            ("scope", "text"),
        ),
        unique=("code",),
        foreign_keys=(ForeignKey("credential_id", "oauth2_credentials"),),
        ttl=True,
    ),
    Table(
        name="oauth2_tokens",
        columns=_cols(
            _ID,
            _CREATED_AT,
            ("credential_id", "uuid"),
            ("token_type", "text"),
            ("expires_in", "integer"),
            ("access_token", "text"),
            ("refresh_token", "text"),
            ("authenticated_userid", "text"),
            ("scope", "text"),
        ),
        unique=("access_token", "refresh_token"),
        foreign_keys=(ForeignKey("credential_id", "oauth2_credentials"),),
        ttl=True,
    ),
    _credentials("acls", ("group", "text"), unique=()),
    _metrics("ratelimiting_metrics"),
    _metrics("response_ratelimiting_metrics"),
)

#: Table name -> Table, for every table the store holds (pass it to any backend).
TABLES: dict[str, Table] = {t.name: t for t in _ALL}

#: Table name -> the migration identifier (``core`` or a plugin name) that creates it.
OWNERS: Mapping[str, str] = {
    "apis": "core",
    "consumers": "core",
    "plugins": "core",
    "nodes": "core",
    "upstreams": "core",
    "targets": "core",
    "keyauth_credentials": "key-auth",
    "basicauth_credentials": "basic-auth",
    "hmacauth_credentials": "hmac-auth",
    "jwt_secrets": "jwt",
    "oauth2_credentials": "oauth2",
    "oauth2_authorization_codes": "oauth2",
    "oauth2_tokens": "oauth2",
    "acls": "acl",
    "ratelimiting_metrics": "rate-limiting",
    "response_ratelimiting_metrics": "response-ratelimiting",
}

#: Every migration identifier with tables, core first (the order migrations run in).
IDENTIFIERS: tuple[str, ...] = tuple(dict.fromkeys(OWNERS[t.name] for t in _ALL))

#: The durable invalidation log (internal; one row per ChangeEvent, key (origin, seq)).
CLUSTER_EVENTS = Table(
    name="cluster_events",
    columns=_cols(
        ("origin", "text"),
        ("seq", "integer"),
        ("at", "timestamp"),
        ("collection", "text"),
        ("type", "text"),
        ("old", "json"),
        ("new", "json"),
        ("extra", "json"),
    ),
    primary_key=("origin", "seq"),
)

#: What migrations ran (internal; one row per identifier, names as a JSON list).
SCHEMA_MIGRATIONS = Table(
    name="schema_migrations",
    columns=_cols(("id", "text"), ("migrations", "json")),
)


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


check_tables(TABLES)


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

#: Tables whose rows carry tags: every Admin-managed entity (Kong 1.1).
TAGGED: frozenset[str] = frozenset(t.name for t in _ALL if TAGS_COLUMN in t.column_names)


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
