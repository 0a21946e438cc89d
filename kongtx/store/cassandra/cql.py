# -*- test-case-name: tests.store.test_cassandra_specific -*-
"""CQL text and values: scripts, replication, paging tokens, column values, WHERE, INSERT.

Plain functions, no driver session: :mod:`.store` runs what they build.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from kongtx.store.common import EPOCH, driver_value, is_uuid_text
from kongtx.store.common import quote as _q
from kongtx.store.interface import InvalidOffset, Row, Table
from kongtx.store.rules import matches_filter

_TOKEN_PREFIX = b"c1:"
#: Not a secret (the Admin API is trusted): it only makes stray tokens fail the MAC.
_TOKEN_KEY = b"kongtx cassandra paging state"
#: Hidden column of TTL tables: when the row expires (epoch ms on the writer's clock).
EXPIRE_COLUMN = "kongtx_expire_at"
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")


def qualified(keyspace: str, table: str) -> str:
    """``"keyspace"."table"``."""
    return f"{_q(keyspace)}.{_q(table)}"


def split_cql(script: str) -> list[str]:
    """The statements of a ``.cql`` file (``--`` comments dropped; ``;`` ends a statement)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    text = "\n".join(lines)
    return [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]


def parse_data_centers(value: Any) -> dict[str, int]:
    """``dc1:2,dc2:3`` (or a list of ``dc:rf``) -> ``{"dc1": 2, "dc2": 3}``."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    result: dict[str, int] = {}
    for item in items:
        name, _, rf = str(item).strip().partition(":")
        if not name or not rf.strip().isdigit():
            raise ValueError(f"cassandra_data_centers: invalid entry {item!r} (want <dc>:<rf>)")
        result[name.strip()] = int(rf)
    return result


def replication(strategy: str, factor: int, data_centers: Any) -> str:
    """The ``WITH replication = {...}`` map of the keyspace, per SPEC §5.2/§7.2."""
    if strategy == "SimpleStrategy":
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(factor)}}}"
    if strategy == "NetworkTopologyStrategy":
        dcs = ", ".join(f"'{dc}': {rf}" for dc, rf in parse_data_centers(data_centers).items())
        return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
    raise ValueError(f"unknown cassandra_repl_strategy {strategy!r}")


def _token_mac(paging_state: bytes, query: str) -> bytes:
    return hmac.new(_TOKEN_KEY, query.encode() + b"\0" + paging_state, hashlib.sha256).digest()[:8]


def encode_token(paging_state: bytes, query: str = "") -> str:
    """The opaque offset token carrying the driver's paging state for ``query``.

    A short MAC binds the state to the listing it came from.  Why: Cassandra answers a
    malformed paging state with a *protocol* error, on which the driver drops the
    connection and marks the host down, so a mistyped ``offset`` must never reach it.
    """
    raw = _TOKEN_PREFIX + _token_mac(paging_state, query) + paging_state
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, query: str = "") -> bytes:
    """The paging state inside an :func:`encode_token` token; ``InvalidOffset`` otherwise."""
    if not isinstance(token, str) or not token:
        raise InvalidOffset(f"invalid offset {token!r}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise InvalidOffset(f"invalid offset {token!r}") from e
    head = len(_TOKEN_PREFIX) + 8
    if not raw.startswith(_TOKEN_PREFIX) or len(raw) <= head:
        raise InvalidOffset(f"invalid offset {token!r}")
    state = raw[head:]
    if not hmac.compare_digest(raw[len(_TOKEN_PREFIX) : head], _token_mac(state, query)):
        raise InvalidOffset(f"invalid offset {token!r}")
    return state


# --------------------------------------------------------------------------- values


def param(table: Table, col: str, value: Any) -> Any:
    """A Python value as the driver wants it for ``col`` (a uuid column takes a ``UUID``)."""
    kind = table.column(col).type
    if kind == "uuid" and value is not None:
        return uuid.UUID(str(value))
    return driver_value(kind, value)


def load(table: Table, values: Sequence[Any]) -> Row:
    """A fetched row (:func:`select_list` order) as a Python row."""
    row: Row = {}
    for col, value in zip(table.column_names, values, strict=False):
        kind = table.column(col).type
        if value is not None:
            if kind == "uuid":
                value = str(value)
            elif kind == "timestamp":
                value = (value - EPOCH) // timedelta(milliseconds=1)
            elif kind == "json":
                value = json.loads(value)
        row[col] = value
    return row


def roundtrip(table: Table, col: str, value: Any) -> Any:
    """``value`` as the driver would return it (so the returned row equals a re-read)."""
    kind = table.column(col).type
    if kind == "timestamp" and value is not None:
        value = int(value)
    return driver_value(kind, value)


def select_list(table: Table) -> str:
    """The columns read: every column, then a TTL table's :data:`EXPIRE_COLUMN`."""
    cols = [*table.column_names, *([EXPIRE_COLUMN] if table.ttl else [])]
    return ", ".join(_q(c) for c in cols)


def alive(table: Table, values: Sequence[Any], now_ms: int) -> bool:
    """Whether a fetched row is still alive at ``now_ms`` (see :data:`EXPIRE_COLUMN`)."""
    if not table.ttl:
        return True
    expire_at = values[len(table.columns)]
    return expire_at is None or expire_at > now_ms


def where(table: Table, filters: Mapping[str, Any]) -> tuple[str, list[Any], dict[str, Any], bool]:
    """(CQL WHERE, params, filters left for Python, whether nothing can match)."""
    parts: list[str] = []
    params: list[Any] = []
    local: dict[str, Any] = {}
    for col, value in filters.items():
        kind = table.column(col).type
        if value is None or kind == "json":
            # CQL cannot match NULL; json text is compared parsed; tags (a TagFilter)
            # are tested in Python too: there is no index on a JSON text column.
            local[col] = value
            continue
        if kind == "uuid" and not is_uuid_text(value):
            return "", [], {}, True
        parts.append(f"{_q(col)} = %s")
        params.append(param(table, col, value))
    cond = (" WHERE " + " AND ".join(parts) + " ALLOW FILTERING") if parts else ""
    return cond, params, local, False


def matches(row: Row, local: Mapping[str, Any]) -> bool:
    """Whether ``row`` passes the filters CQL could not apply."""
    return all(matches_filter(row.get(c), v) for c, v in local.items())


def insert_statement(
    keyspace: str, table: Table, row: Row, expire_at: int | None, now_ms: int
) -> tuple[str, list[Any]]:
    """INSERT of the whole row; a TTL row carries its expiry and a native TTL.

    Cassandra counts TTLs in whole seconds from a truncated "now", so a cell can die
    up to a second early; the native TTL is therefore one second longer than asked
    and reads hide the row at its exact ``expire_at`` on the injected clock.
    """
    cols = list(table.column_names)
    params = [param(table, c, row.get(c)) for c in cols]
    using = ""
    if table.ttl:
        cols.append(EXPIRE_COLUMN)
        params.append(expire_at)
        if expire_at is not None:
            left = max(0, expire_at - now_ms)
            using = f" USING TTL {-(-left // 1000) + 1}"
    return (
        f"INSERT INTO {qualified(keyspace, table.name)} ({', '.join(_q(c) for c in cols)})"
        f" VALUES ({', '.join(['%s'] * len(cols))}){using}",
        params,
    )
