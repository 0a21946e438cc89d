# -*- test-case-name: tests.unit.test_declarative -*-
"""Validating a declarative document into a store, entity by entity.

Every entity goes through the DAO (the Admin API's validation); entities
without an ``id`` get a deterministic one; every error names the entity by its
path in the document.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from kongtx.dao import DAO
from kongtx.declarative.document import (
    CREDENTIAL_COLLECTIONS,
    FORMAT_VERSIONS,
    TOP_LEVEL,
    DeclarativeError,
    as_text,
)
from kongtx.errors import (
    ConflictError,
    DaoError,
    EntityError,
    ForeignKeyError,
    PluginExistsError,
    SchemaError,
)
from kongtx.plugins.basic_auth.crypto import is_kdf_hash, is_legacy_hash
from kongtx.store.interface import Row
from kongtx.store.memory import MemoryStore
from kongtx.store.schemas import EntitySchema, Field, default_api_name, is_uuid, normalize_target
from kongtx.store.tables import TABLES

#: The namespace of the deterministic ids (uuid5 of ``<collection>:<natural key>``).
ID_NAMESPACE = uuid.UUID("6f0c3a52-5c1e-4e0b-9a57-0b7d0c6e9a11")


@dataclasses.dataclass
class LoadResult:
    """How many rows of each collection a load wrote."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, collection: str) -> None:
        self.counts[collection] = self.counts.get(collection, 0) + 1

    def summary(self) -> str:
        """``2 apis, 1 consumers, 3 plugins`` (collections in load order)."""
        if not self.counts:
            return "nothing"
        return ", ".join(f"{n} {c}" for c, n in self.counts.items())


async def _keep_stored_hashes(
    inner: Callable[..., Awaitable[None]],
    row: dict[str, Any],
    old: Mapping[str, Any] | None,
    run_in_thread: Any,
) -> None:
    """An exported basic-auth password is the stored hash: keep it instead of hashing it again."""
    password = row.get("password")
    if isinstance(password, str) and (is_kdf_hash(password) or is_legacy_hash(password)):
        return
    await inner(row, old, run_in_thread)


class LoadingDAO(DAO):
    """The DAO, with the ids and ``created_at`` of a document kept instead of generated.

    The Admin API's DAO always generates both on insert; a declarative load
    must keep the document's (or the deterministic ones) so that a round trip
    through ``db_export``/``db_import`` changes nothing.  Stored basic-auth hashes
    are kept as they are (see :func:`_keep_stored_hashes`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preset: dict[str, Any] = {}
        schemas = dict(self.schemas)
        credentials = schemas.get("basicauth_credentials")
        if credentials is not None and credentials.before_write is not None:
            inner = credentials.before_write

            async def before_write(
                row: dict[str, Any], old: Mapping[str, Any] | None, run: Any
            ) -> None:
                await _keep_stored_hashes(inner, row, old, run)

            schemas["basicauth_credentials"] = dataclasses.replace(
                credentials, before_write=before_write
            )
        self.schemas = schemas

    @classmethod
    def like(cls, dao: DAO, store: Any, *, listeners: bool = False) -> LoadingDAO:
        """A loading DAO over ``store`` with ``dao``'s plugins, clock and thread runner.

        With ``listeners`` it also tells ``dao``'s listeners of every write (an
        import into the datastore a node is using invalidates its cache).
        """
        loading = cls(store, dao.registry, dao.clock, dao._run)
        if listeners:
            for fn in dao._listeners:
                loading.add_listener(fn)
        return loading

    def _generate(self, f: Field) -> Any:
        if f.type == "id" and self.preset.get("id") is not None:
            return self.preset["id"]
        if f.type == "timestamp" and self.preset.get("created_at") is not None:
            return self.preset["created_at"]
        return super()._generate(f)


def _deterministic_id(collection: str, natural: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{collection}:{natural}"))


def credential_collections(schemas: Mapping[str, EntitySchema]) -> dict[str, str]:
    """The nestable credential collections whose plugin is loaded (``CREDENTIAL_COLLECTIONS``)."""
    return {c: k for c, k in CREDENTIAL_COLLECTIONS.items() if c in schemas}


def error_lines(path: str, error: DaoError) -> list[str]:
    """One line per problem of ``error``, each naming the entity path and field."""
    if isinstance(error, SchemaError):
        lines = []
        for field, messages in error.fields.items():
            for message in messages if isinstance(messages, list) else [messages]:
                lines.append(f"{path}.{field}: {message}")
        return lines
    if isinstance(error, EntityError):
        return [f"{path}: {error.message}"]
    if isinstance(error, ConflictError):
        return [f"{path}.{error.field}: already exists with value '{as_text(error.value)}'"]
    if isinstance(error, ForeignKeyError):
        return [f"{path}.{error.field}: does not exist with value '{as_text(error.value)}'"]
    if isinstance(error, PluginExistsError):
        return [f"{path}: Plugin configuration already exists"]
    return [f"{path}: {error}"]


class _Loader:
    """One pass over a document, writing through ``dao`` and collecting every error."""

    def __init__(
        self, dao: LoadingDAO, upsert: bool, stop_at_first: bool, previous: DAO | None = None
    ) -> None:
        self.dao = dao
        self.previous = previous
        self.upsert = upsert
        self.stop_at_first = stop_at_first
        self.errors: list[str] = []
        self.result = LoadResult()
        self.credential_keys = credential_collections(self.dao.schemas)

    def fail(self, lines: Sequence[str]) -> None:
        self.errors.extend(lines)
        if self.stop_at_first:
            raise DeclarativeError(self.errors)

    def items(self, path: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
        """The entities of a list at ``path``; a malformed list or entry is an error."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail([f"{path}: must be a list"])
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        for i, entry in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(entry, dict):
                self.fail([f"{where}: must be a mapping (an object)"])
                continue
            out.append((where, entry))
        return out

    async def write(
        self, path: str, collection: str, params: dict[str, Any], natural: str
    ) -> Row | None:
        """Insert (or, with ``upsert``, replace by id) one entity; None after an error."""
        given_id = params.get("id")
        if given_id is not None and not is_uuid(given_id):
            self.fail([f"{path}.id: {as_text(given_id)} is not a valid uuid"])
            return None
        row_id = str(given_id).lower() if given_id is not None else None
        row_id = row_id or _deterministic_id(collection, natural)
        values = {**params, "id": row_id}
        try:
            old = await self.dao.find(collection, {"id": row_id}) if self.upsert else None
            if old is not None:
                values.setdefault("created_at", old["created_at"])
                if collection == "plugins":
                    values.setdefault("name", old["name"])
                row = await self.dao.update(collection, {"id": row_id}, values, full=True)
            else:
                created_at = params.get("created_at")
                if created_at is None and self.previous is not None:
                    before = await self.previous.find(collection, {"id": row_id})
                    created_at = before["created_at"] if before is not None else None
                self.dao.preset = {"id": row_id, "created_at": created_at}
                try:
                    row = await self.dao.insert(collection, values)
                finally:
                    self.dao.preset = {}
        except DaoError as e:
            self.fail(error_lines(path, e))
            return None
        if row is not None:
            self.result.add(collection)
        return row

    async def reference(
        self, path: str, collection: str, value: Any, natural_key: str
    ) -> str | None:
        """The id of the row an ``api``/``consumer`` reference names (an id or a name)."""
        if isinstance(value, dict):
            value = value.get("id") or value.get(natural_key)
        if not isinstance(value, str) or not value:
            self.fail([f"{path}: must name an entity by id or {natural_key}"])
            return None
        key = {"id": value.lower()} if is_uuid(value) else {natural_key: value}
        row = await self.dao.find(collection, key)
        if row is None:
            self.fail([f"{path}: does not exist with value '{value}'"])
            return None
        return str(row["id"])

    async def load(self, document: Mapping[str, Any]) -> None:
        version = document.get("_format_version")
        if version is None:
            self.fail(['_format_version: is required ("1.1")'])
        elif str(version) not in FORMAT_VERSIONS:
            allowed = ", ".join(f'"{v}"' for v in FORMAT_VERSIONS)
            self.fail([f'_format_version: "{version}" is not supported (supported: {allowed})'])
        for key in document:
            if key != "_format_version" and key not in TOP_LEVEL:
                self.fail([f"{key}: is an unknown key"])
        pending_plugins: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

        for path, entity in self.items("apis", document.get("apis")):
            params = {k: v for k, v in entity.items() if k != "plugins"}
            natural = params.get("name") or default_api_name(params) or path
            row = await self.write(path, "apis", params, str(natural))
            for p_path, plugin in self.items(f"{path}.plugins", entity.get("plugins")):
                if row is not None:
                    pending_plugins.append((p_path, plugin, {"api_id": row["id"]}))

        for path, entity in self.items("consumers", document.get("consumers")):
            nested = set(self.credential_keys) | {"plugins"}
            params = {k: v for k, v in entity.items() if k not in nested}
            natural = params.get("username") or params.get("custom_id") or path
            row = await self.write(path, "consumers", params, str(natural))
            for collection, key in self.credential_keys.items():
                for c_path, cred in self.items(f"{path}.{collection}", entity.get(collection)):
                    if row is None:
                        continue
                    values = {**cred, "consumer_id": row["id"]}
                    value = cred.get(key)
                    natural_cred = f"{row['id']}:{value if value else c_path}"
                    await self.write(c_path, collection, values, natural_cred)
            for p_path, plugin in self.items(f"{path}.plugins", entity.get("plugins")):
                if row is not None:
                    pending_plugins.append((p_path, plugin, {"consumer_id": row["id"]}))

        for path, plugin in self.items("plugins", document.get("plugins")):
            pending_plugins.append((path, plugin, {}))

        await self.load_upstreams(document.get("upstreams"))

        for path, plugin, implied in pending_plugins:
            params = {k: v for k, v in plugin.items() if k not in ("api", "consumer")}
            params.update(implied)
            broken = False
            for ref, collection, natural_key, column in (
                ("api", "apis", "name", "api_id"),
                ("consumer", "consumers", "username", "consumer_id"),
            ):
                if plugin.get(ref) is not None:
                    found = await self.reference(
                        f"{path}.{ref}", collection, plugin[ref], natural_key
                    )
                    broken = broken or found is None
                    params[column] = found
            if broken:
                continue
            natural = ":".join(as_text(params.get(c)) for c in ("name", "api_id", "consumer_id"))
            await self.write(path, "plugins", params, natural)

    async def load_upstreams(self, value: Any) -> None:
        """``upstreams:`` with their nested ``targets:`` (ids from name, upstream + target)."""
        for path, entity in self.items("upstreams", value):
            params = {k: v for k, v in entity.items() if k != "targets"}
            row = await self.write(path, "upstreams", params, as_text(params.get("name")) or path)
            for t_path, target in self.items(f"{path}.targets", entity.get("targets")):
                if row is None:
                    continue
                values = {**target, "upstream_id": row["id"]}
                named = normalize_target(target.get("target")) or t_path
                await self.write(t_path, "targets", values, f"{row['id']}:{named}")


async def load_document(
    document: Mapping[str, Any],
    dao: LoadingDAO,
    *,
    upsert: bool = False,
    stop_at_first: bool = False,
    previous: DAO | None = None,
) -> LoadResult:
    """Write every entity of ``document`` through ``dao``; raise :class:`DeclarativeError`.

    With ``stop_at_first`` the first invalid entity stops the load (for a real
    datastore, where what was written stays written); otherwise every error is
    collected and raised together at the end.  An entity without ``created_at``
    whose id ``previous`` holds keeps that row's (a reload changes nothing).
    """
    loader = _Loader(dao, upsert, stop_at_first, previous)
    await loader.load(document)
    if loader.errors:
        raise DeclarativeError(loader.errors)
    return loader.result


def _fresh_store(dao: DAO) -> MemoryStore:
    origin = getattr(dao.store, "origin", None) or "declarative"
    return MemoryStore(TABLES, origin=origin, clock=dao.clock)


async def validate_document(
    document: Mapping[str, Any], dao: DAO, previous: DAO | None = None
) -> tuple[MemoryStore, LoadResult]:
    """Load ``document`` into a new in-memory store (``dao``'s plugins); every error raised.

    Returns the loaded store (what DB-less mode swaps in) and what it holds.
    """
    store = _fresh_store(dao)
    result = await load_document(document, LoadingDAO.like(dao, store), previous=previous)
    return store, result
