# -*- test-case-name: tests.store.test_contract,tests.store.test_postgres_specific -*-
"""PostgreSQL statements: column expressions, parameters, row decoding, WHERE, keyset paging.

Every read selects ``FROM <table> AS t``; a TTL table joins ``ttls`` and hides its
expired rows as of ``now`` (the injected clock's time, passed in).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from kongtx.store.common import EPOCH, driver_value, is_uuid_text
from kongtx.store.common import quote as _quote
from kongtx.store.interface import Row, Table
from kongtx.store.rules import TagFilter, order_columns


def timestamp(seconds: float) -> datetime:
    """An epoch time in seconds as the naive UTC ``datetime`` PostgreSQL stores."""
    return EPOCH + timedelta(seconds=seconds)


def expr(table: Table, col: str, alias: str = "t") -> str:
    """``col`` as selected: timestamps as epoch ms, JSON and uuids as text."""
    ref = f"{alias}.{_quote(col)}"
    kind = table.column(col).type
    if kind == "timestamp":
        return f"(extract(epoch from {ref}) * 1000)::bigint"
    if kind in ("json", "uuid"):
        return f"{ref}::text"
    return ref


def select_list(table: Table) -> str:
    return ", ".join(expr(table, c) for c in table.column_names)


def param(table: Table, col: str, value: Any) -> Any:
    """A Python value as PostgreSQL wants it for ``col``."""
    return driver_value(table.column(col).type, value)


def load(table: Table, values: Sequence[Any]) -> Row:
    """A selected row (:func:`select_list` order) as a Python row."""
    row: Row = {}
    for col, value in zip(table.column_names, values, strict=True):
        kind = table.column(col).type
        if value is not None:
            if kind == "json":
                value = json.loads(value)
            elif kind in ("timestamp", "integer"):
                value = int(value)
            elif kind == "number":
                value = float(value)
        row[col] = value
    return row


def from_clause(table: Table) -> tuple[str, list[Any]]:
    """``FROM`` clause hiding expired TTL rows, and its parameters."""
    sql = f"FROM {_quote(table.name)} AS t"
    if not table.ttl:
        return sql, []
    (pk,) = table.primary_key
    sql += (
        f" LEFT JOIN ttls ON ttls.table_name = %s AND ttls.primary_key_value = t.{_quote(pk)}::text"
    )
    return sql, [table.name]


def where(table: Table, filters: Mapping[str, Any], now: datetime) -> tuple[str, list[Any]]:
    """`` WHERE ...`` for the live rows matching ``filters`` (``""`` when none), and parameters."""
    parts: list[str] = []
    params: list[Any] = []
    if table.ttl:
        parts.append("(ttls.expire_at IS NULL OR ttls.expire_at > %s)")
        params.append(now)
    for col, value in filters.items():
        ref = f"t.{_quote(col)}"
        kind = table.column(col).type
        if isinstance(value, TagFilter):
            # jsonb's ?& (all) / ?| (any) keep the filter inside the query (GIN index)
            op = "?&" if value.mode == "all" else "?|"
            parts.append(f"({ref})::jsonb {op} %s::text[]")
            params.append(list(value.tags))
        elif value is None:
            parts.append(f"{ref} IS NULL")
        elif kind == "uuid" and not is_uuid_text(value):
            parts.append("FALSE")  # no uuid column holds a non-uuid
        elif kind == "json":
            parts.append(f"{ref}::jsonb = %s::jsonb")
            params.append(json.dumps(value))
        else:
            parts.append(f"{ref} = %s")
            params.append(param(table, col, value))
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def query(
    table: Table,
    filters: Mapping[str, Any],
    now: datetime,
    tail: str = "",
    what: str | None = None,
) -> tuple[str, list[Any]]:
    """``SELECT <what> FROM ... WHERE ...<tail>`` and its parameters."""
    frm, p1 = from_clause(table)
    cond, p2 = where(table, filters, now)
    return f"SELECT {what or select_list(table)} {frm}{cond}{tail}", p1 + p2


def order_by(table: Table) -> str:
    return " ORDER BY " + ", ".join(f"t.{_quote(c)} ASC NULLS FIRST" for c in order_columns(table))


def after(table: Table, position: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL for "sorts after ``position``" in :func:`order_columns` order, NULLs first."""
    cols = order_columns(table)
    alternatives: list[str] = []
    params: list[Any] = []
    for i, col in enumerate(cols):
        terms: list[str] = []
        for prev, value in zip(cols[:i], position[:i], strict=True):
            if value is None:
                terms.append(f"t.{_quote(prev)} IS NULL")
            else:
                terms.append(f"t.{_quote(prev)} = %s")
                params.append(param(table, prev, value))
        value = position[i]
        if value is None:
            terms.append(f"t.{_quote(col)} IS NOT NULL")
        else:
            terms.append(f"t.{_quote(col)} > %s")
            params.append(param(table, col, value))
        alternatives.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(alternatives) + ")", params


def where_pk(table: Table, row: Row) -> tuple[str, list[Any]]:
    """`` WHERE`` naming ``row`` by its primary key, and the parameters."""
    parts = [f"t.{_quote(c)} = %s" for c in table.primary_key]
    return " WHERE " + " AND ".join(parts), [param(table, c, row[c]) for c in table.primary_key]
