# -*- test-case-name: tests.unit.test_dao -*-
"""The one way Admin writes reach the store: validate, default, generate, write, notify.

Why a DAO between the Admin API and the store: the store keeps rows and single
column constraints; everything Kong 0.9 adds on top (schemas and messages, the
PUT/PATCH rules of SPEC §1.4, one plugin config per (name, api, consumer), one
acl group per consumer, slow password hashing) lives here once for every backend.
Listeners hear about each committed change (cascaded deletions included), which
is how the node invalidates its caches only after commit (DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from kongtx.clock import Clock
from kongtx.dao_checks import (
    check_key_uuids,
    check_pk_unchanged,
    is_id,
    list_filters,
    lower_ids,
    normalise,
)
from kongtx.errors import (
    ConflictError,
    DatabaseError,
    EntityError,
    ForeignKeyError,
    NotFoundError,
    PluginExistsError,
)
from kongtx.log import logger
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.interface import (
    ChangeType,
    ForeignKeyViolation,
    IStore,
    Page,
    Row,
    StoreUnavailable,
    Table,
    UniqueViolation,
)
from kongtx.store.schemas import (
    EntitySchema,
    Field,
    RunInThread,
    Schema,
    core_schemas,
    is_uuid,
    merge_patch,
    validate,
)
from kongtx.store.tables import TABLES

T = TypeVar("T")

Listener = Callable[[str, ChangeType, Row | None, Row | None], None]


def _default_runner(reactor: object) -> RunInThread:
    """Run in the reactor's thread pool; inline only for test clocks that have no threads."""
    if IReactorThreads.providedBy(reactor):

        async def in_pool(fn: Callable[[], Any]) -> Any:
            pool = reactor.getThreadPool()
            return await deferToThreadPool(reactor, pool, fn)

        return in_pool

    async def inline(fn: Callable[[], Any]) -> Any:
        return fn()

    return inline


class DAO:
    """Validated CRUD over every collection (core and plugin-owned)."""

    log = logger()

    def __init__(
        self,
        store: IStore,
        registry: PluginRegistry,
        clock: Clock,
        run_in_thread: Callable[[Callable[[], T]], Awaitable[T]] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self._run: RunInThread = run_in_thread or _default_runner(clock.reactor)
        self._listeners: list[Listener] = []
        self._config_schemas: dict[str, Schema] = {}
        for spec in registry.specs():
            schema = spec.config_schema
            if schema.no_consumer != spec.no_consumer:
                schema = dataclasses.replace(schema, no_consumer=spec.no_consumer)
            self._config_schemas[spec.name] = schema
        schemas = core_schemas(self._config_schemas.get, PluginExistsError)
        schemas.update(registry.entity_schemas())
        self.schemas: Mapping[str, EntitySchema] = schemas

    # ------------------------------------------------------------------ listeners

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(collection, type, old, new)`` after each committed change, once per row."""
        self._listeners.append(fn)

    def _notify(self, collection: str, kind: ChangeType, old: Row | None, new: Row | None) -> None:
        for fn in list(self._listeners):
            try:
                fn(collection, kind, old, new)
            except Exception:
                self.log.failure(
                    "DAO listener {fn!r} failed on {kind} of {collection}",
                    fn=fn,
                    kind=kind,
                    collection=collection,
                )

    # ------------------------------------------------------------------ writes

    async def insert(self, collection: str, params: Mapping[str, Any]) -> Row:
        """Validate ``params``, apply defaults, generate id/created_at, store and notify."""
        schema = self._schema(collection)
        values = dict(params)
        for name, f in schema.fields.items():
            if f.dao_insert_value:
                values[name] = self._generate(f)
        row = normalise(schema, validate(schema, values, "insert"))
        await self._check_together(collection, schema, row, None)
        if schema.before_write is not None:
            await schema.before_write(row, None, self._run)
        ttl = schema.ttl(row) if schema.ttl is not None else None
        new = await self._call(self.store.insert(collection, self._columns(schema, row), ttl))
        self._notify(collection, "create", None, new)
        return new

    async def update(
        self,
        collection: str,
        key: Mapping[str, Any],
        params: Mapping[str, Any],
        *,
        full: bool = False,
    ) -> Row | None:
        """PATCH (``full=False``, merge) or PUT (``full=True``, replace) one row.

        PATCH returns None when no row matches; PUT raises :class:`NotFoundError`
        (our deliberate difference from Kong's empty 200).
        """
        schema = self._schema(collection)
        check_key_uuids(schema, key)
        if not full and not params:
            raise EntityError("empty body")
        old = await self._get(collection, schema, key)
        if old is None:
            if full:
                raise NotFoundError()
            return None
        pk = {c: old[c] for c in schema.primary_key}
        check_pk_unchanged(schema, old, params)
        if full:
            values = {**params, **pk}
            row = validate(schema, values, "full", old=old)
        else:
            merged = merge_patch(schema, old, params)
            row = validate(schema, merged, "patch", patch=params, old=old)
        row = normalise(schema, row)
        await self._check_together(collection, schema, row, old)
        if schema.before_write is not None:
            await schema.before_write(row, old, self._run)
        ttl = schema.ttl(row) if schema.ttl is not None else None
        new = await self._call(self.store.update(collection, pk, self._columns(schema, row), ttl))
        if new is None:
            if full:
                raise NotFoundError()
            return None
        self._notify(collection, "update", old, new)
        return new

    async def delete(self, collection: str, key: Mapping[str, Any]) -> bool:
        """Delete one row and, by cascade, its dependants; notify each.  False when absent."""
        schema = self._schema(collection)
        check_key_uuids(schema, key)
        if set(key) == set(schema.primary_key):
            pk = lower_ids(schema, key)
        else:
            old = await self._get(collection, schema, key)
            if old is None:
                return False
            pk = {c: old[c] for c in schema.primary_key}
        deleted = await self._call(self.store.delete(collection, pk))
        for table, row in deleted:
            self._notify(table, "delete", row, None)
        return bool(deleted)

    # ------------------------------------------------------------------ reads

    async def find(self, collection: str, key: Mapping[str, Any]) -> Row | None:
        """The row matching ``key`` (its primary key, or a unique/natural key), or None."""
        schema = self._schema(collection)
        if any(is_id(schema, c) and v is not None and not is_uuid(v) for c, v in key.items()):
            return None
        return await self._get(collection, schema, key)

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> list[Row]:
        """Every row matching the equality ``filters`` (validated like list filters)."""
        schema = self._schema(collection)
        return await self._call(self.store.select(collection, list_filters(schema, filters)))

    async def find_page(
        self, collection: str, filters: Mapping[str, Any], size: int, offset: str | None
    ) -> Page:
        """One page of rows matching ``filters`` (SPEC §1.3); store paging tokens are opaque."""
        schema = self._schema(collection)
        clean = list_filters(schema, filters)
        return await self._call(self.store.page(collection, clean, size, offset))

    async def count(self, collection: str, filters: Mapping[str, Any]) -> int:
        """How many rows match ``filters``."""
        schema = self._schema(collection)
        return await self._call(self.store.count(collection, list_filters(schema, filters)))

    # ------------------------------------------------------------------ helpers

    def _schema(self, collection: str) -> EntitySchema:
        try:
            return self.schemas[collection]
        except KeyError:
            raise KeyError(f"unknown collection {collection!r}") from None

    def _generate(self, f: Field) -> Any:
        if f.type == "timestamp":
            return self.clock.millis()
        if f.type == "id":
            return str(uuid.uuid4())
        raise ValueError(f"cannot generate a {f.type} value")

    def _table(self, collection: str) -> Table | None:
        """The store's shape of ``collection`` (its own map, else the bundled one)."""
        tables: Mapping[str, Table] = getattr(self.store, "tables", None) or TABLES
        return tables.get(collection)

    def _columns(self, schema: EntitySchema, row: Mapping[str, Any]) -> Row:
        """Every column of the collection, NULL (None) when unset."""
        table = self._table(schema.name)
        names = table.column_names if table is not None else tuple(schema.fields)
        return {name: row.get(name) for name in names}

    async def _get(
        self, collection: str, schema: EntitySchema, key: Mapping[str, Any]
    ) -> Row | None:
        """The row named by ``key``: a primary or unique key through ``get``, else the first match."""
        key = lower_ids(schema, key)
        table = self._table(collection)
        keyed = all(key.get(c) is not None for c in schema.primary_key) or (
            table is not None and any(key.get(c) is not None for c in table.unique)
        )
        if keyed:
            return await self._call(self.store.get(collection, key))
        rows = await self._call(self.store.select(collection, key))
        return rows[0] if rows else None

    async def _check_together(
        self, collection: str, schema: EntitySchema, row: Mapping[str, Any], old: Row | None
    ) -> None:
        """Multi-column uniqueness the store does not enforce (plugins, acls)."""
        for rule in schema.unique_together:
            if old is not None and not rule.on_update:
                continue
            filters = {c: row.get(c) for c in rule.columns}
            for other in await self._call(self.store.select(collection, filters)):
                if old is None or any(other.get(c) != old.get(c) for c in schema.primary_key):
                    raise rule.refuse(row)

    async def _call(self, work: Awaitable[T]) -> T:
        """Await a store call, turning its errors into the DAO's (SPEC §1.2)."""
        try:
            return await work
        except UniqueViolation as e:
            raise ConflictError(e.field, e.value) from e
        except ForeignKeyViolation as e:
            raise ForeignKeyError(e.field, e.value) from e
        except StoreUnavailable as e:
            raise DatabaseError() from e
