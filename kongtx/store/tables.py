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

The rules every backend applies to these tables (call checks, listing order, paging
tokens, the tag filter) are :mod:`kongtx.store.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping

from kongtx.store.interface import Column, ColumnType, ForeignKey, Table
from kongtx.store.rules import TAGS_COLUMN, check_tables


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


check_tables(TABLES)


#: Tables whose rows carry tags: every Admin-managed entity (Kong 1.1).
TAGGED: frozenset[str] = frozenset(t.name for t in _ALL if TAGS_COLUMN in t.column_names)
