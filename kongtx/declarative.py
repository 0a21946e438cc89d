# -*- test-case-name: tests.unit.test_declarative -*-
"""Declarative configuration: a whole gateway configuration in one YAML or JSON file.

Why: a node with ``database = off`` keeps its configuration in memory and takes
it from a file (``declarative_config``) or from ``POST /config``, and ``kong
config db_import/db_export`` moves the same document into and out of a real
datastore.  The format is Kong 1.x's declarative format adapted to the 0.9
entities (docs/dbless.md)::

    _format_version: "1.1"
    apis:
      - name: example
        request_host: example.com
        upstream_url: http://upstream:8080
        plugins:                      # api_id implied
          - name: key-auth
    consumers:
      - username: alice
        keyauth_credentials:          # Kong 1.x's collection names
          - key: secret
        acls:
          - group: admins
        plugins:                      # consumer_id implied
          - name: rate-limiting
            api: example              # an API's name or id
            config: {minute: 10}
    plugins:                          # global, or naming ``api``/``consumer``
      - name: cors
    upstreams:                        # Kong 1.x load balancing (issue 9)
      - name: backend.internal        # what an API's upstream_url host names
        targets:                      # upstream_id implied
          - target: 10.0.0.1:8080
            weight: 50

Every entity goes through the same DAO validation as the Admin API (defaults,
generated keys, SPEC's messages), so a file can never hold what the Admin API
would refuse.  Entities without an ``id`` get a deterministic one (uuid5 of the
entity's natural key), so reloading a file keeps every id stable: cache keys,
``/apis/{id}`` URLs and ``consumer_id`` references in plugin configs survive.
Errors name the entity by its path in the document (0-based indexes), e.g.
``apis[2].request_host: Invalid value: a b``.

A configuration is always loaded into a fresh :class:`~kongtx.store.memory.MemoryStore`
first; only a fully valid one is swapped in (:class:`DeclarativeState`) or written
to a datastore (:func:`import_document`), so nothing ever sees half of one.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import yaml
from twisted.internet.defer import DeferredLock

from kongtx.cache import Cache
from kongtx.config import Config, ConfigError
from kongtx.dao import DAO
from kongtx.errors import (
    ConflictError,
    DaoError,
    EntityError,
    ForeignKeyError,
    PluginExistsError,
    SchemaError,
)
from kongtx.log import logger
from kongtx.plugins.basic_auth.crypto import is_kdf_hash, is_legacy_hash
from kongtx.store.interface import Row
from kongtx.store.memory import MemoryStore
from kongtx.store.schemas import (
    EntitySchema,
    Field,
    default_api_name,
    is_uuid,
    normalize_target,
)
from kongtx.store.tables import TABLES

log = logger()

#: The ``_format_version`` values this loader understands.
FORMAT_VERSIONS = ("1.1",)
#: What :func:`export_document` writes.
FORMAT_VERSION = "1.1"
#: The namespace of the deterministic ids (uuid5 of ``<collection>:<natural key>``).
ID_NAMESPACE = uuid.UUID("6f0c3a52-5c1e-4e0b-9a57-0b7d0c6e9a11")
#: Top-level keys of a document besides ``_format_version``.
TOP_LEVEL = ("apis", "consumers", "plugins", "upstreams")
#: The credential collections a consumer entry may nest, under Kong 1.x's names, each
#: with the column that names a credential (its deterministic id's natural key).
CREDENTIAL_COLLECTIONS = {
    "keyauth_credentials": "key",
    "basicauth_credentials": "username",
    "hmacauth_credentials": "username",
    "jwt_secrets": "key",
    "oauth2_credentials": "client_id",
    "acls": "group",
}


class DeclarativeError(ConfigError):
    """A document that cannot be loaded; ``errors`` holds one line per problem.

    A :class:`~kongtx.config.ConfigError` so that a node refusing its
    ``declarative_config`` stops like one refusing kong.conf: one line per error,
    no traceback, non-zero exit.
    """


# --------------------------------------------------------------------------- parsing


def parse(text: str | bytes, source: str = "<document>") -> dict[str, Any]:
    """A document from YAML or JSON text (JSON is read as YAML's subset); ``safe_load`` only."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DeclarativeError([f"{source}: is not UTF-8 text"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DeclarativeError([f"{source}: cannot parse{where}: {problem}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise DeclarativeError([f"{source}: the document must be a mapping (an object)"])
    return document


def read_file(path: str) -> dict[str, Any]:
    """Read and parse the file at ``path`` (errors name it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeclarativeError([f"{path}: cannot read: {e.strerror or e}"]) from None
    return parse(data, path)


def dump(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """``document`` as YAML (the default) or JSON text, keys in the order given."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    text: str = yaml.safe_dump(
        dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


def format_for(path: str | None) -> str:
    """``json`` for a ``.json`` file name, else ``yaml``."""
    return "json" if path is not None and path.lower().endswith(".json") else "yaml"


# --------------------------------------------------------------------------- loading


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


def _text(value: Any) -> str:
    return "" if value is None else str(value)


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
        return [f"{path}.{error.field}: already exists with value '{_text(error.value)}'"]
    if isinstance(error, ForeignKeyError):
        return [f"{path}.{error.field}: does not exist with value '{_text(error.value)}'"]
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
        self.credential_keys = self._credential_keys()

    def _credential_keys(self) -> dict[str, str]:
        """The nestable credential collections whose plugin is loaded on this node."""
        return {c: k for c, k in CREDENTIAL_COLLECTIONS.items() if c in self.dao.schemas}

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
            self.fail([f"{path}.id: {_text(given_id)} is not a valid uuid"])
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
            natural = ":".join(_text(params.get(c)) for c in ("name", "api_id", "consumer_id"))
            await self.write(path, "plugins", params, natural)

    async def load_upstreams(self, value: Any) -> None:
        """``upstreams:`` with their nested ``targets:`` (ids from name, upstream + target)."""
        for path, entity in self.items("upstreams", value):
            params = {k: v for k, v in entity.items() if k != "targets"}
            row = await self.write(path, "upstreams", params, _text(params.get("name")) or path)
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


async def import_document(document: Mapping[str, Any], dao: DAO) -> LoadResult:
    """``kong config db_import``: validate all of ``document``, then write it through ``dao``.

    Nothing is written unless the whole document is valid on its own; conflicts
    with rows already in the datastore then stop at the first one.  Entities
    whose id already exists are replaced, so importing a file twice is harmless.
    """
    await validate_document(document, dao)
    return await load_document(
        document,
        LoadingDAO.like(dao, dao.store, listeners=True),
        upsert=True,
        stop_at_first=True,
    )


# --------------------------------------------------------------------------- exporting


def _entity(schema: EntitySchema, row: Row, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row as a document entry: schema field order, NULLs and implied keys left out."""
    return {
        name: row[name]
        for name in schema.fields
        if name in row and row[name] is not None and name not in drop
    }


def _order(row: Row, *keys: str) -> tuple[str, ...]:
    return tuple(_text(row.get(k)) for k in keys)


async def export_document(dao: DAO) -> dict[str, Any]:
    """Everything the datastore holds, as a document (stable order: natural keys, then ids).

    A plugin on one API only is nested under that API, one on one consumer only
    under that consumer; global plugins and API + consumer pairs are top level,
    naming ``api_id``/``consumer_id``.
    """
    schemas = dao.schemas
    apis = sorted(await dao.find_all("apis", {}), key=lambda r: _order(r, "name", "id"))
    consumers = sorted(
        await dao.find_all("consumers", {}),
        key=lambda r: _order(r, "username", "custom_id", "id"),
    )
    plugins = sorted(
        await dao.find_all("plugins", {}),
        key=lambda r: _order(r, "name", "api_id", "consumer_id", "id"),
    )
    loader = _Loader(LoadingDAO.like(dao, dao.store), upsert=False, stop_at_first=False)
    by_api: dict[str, list[Row]] = {}
    by_consumer: dict[str, list[Row]] = {}
    top: list[Row] = []
    for p in plugins:
        if p.get("api_id") and not p.get("consumer_id"):
            by_api.setdefault(p["api_id"], []).append(p)
        elif p.get("consumer_id") and not p.get("api_id"):
            by_consumer.setdefault(p["consumer_id"], []).append(p)
        else:
            top.append(p)
    document: dict[str, Any] = {"_format_version": FORMAT_VERSION}
    out_apis = []
    for api in apis:
        entry = _entity(schemas["apis"], api)
        nested = [_entity(schemas["plugins"], p, ("api_id",)) for p in by_api.get(api["id"], [])]
        if nested:
            entry["plugins"] = nested
        out_apis.append(entry)
    out_consumers = []
    for consumer in consumers:
        entry = _entity(schemas["consumers"], consumer)
        for collection, key in loader.credential_keys.items():
            rows = await dao.find_all(collection, {"consumer_id": consumer["id"]})
            rows.sort(key=lambda r, k=key: _order(r, k, "id"))  # type: ignore[misc]
            if rows:
                entry[collection] = [
                    _entity(schemas[collection], r, ("consumer_id",)) for r in rows
                ]
        nested = [
            _entity(schemas["plugins"], p, ("consumer_id",))
            for p in by_consumer.get(consumer["id"], [])
        ]
        if nested:
            entry["plugins"] = nested
        out_consumers.append(entry)
    if out_apis:
        document["apis"] = out_apis
    if out_consumers:
        document["consumers"] = out_consumers
    if top:
        document["plugins"] = [_entity(schemas["plugins"], p) for p in top]
    out_upstreams = []
    for upstream in sorted(await dao.find_all("upstreams", {}), key=lambda r: _order(r, "name")):
        entry = _entity(schemas["upstreams"], upstream)
        targets = await dao.find_all("targets", {"upstream_id": upstream["id"]})
        targets.sort(key=lambda r: _order(r, "target", "id"))
        if targets:
            entry["targets"] = [_entity(schemas["targets"], t, ("upstream_id",)) for t in targets]
        out_upstreams.append(entry)
    if out_upstreams:
        document["upstreams"] = out_upstreams
    return document


# --------------------------------------------------------------------------- DB-less


async def load_declarative_config(config: Config, dao: DAO) -> LoadResult | None:
    """At start in DB-less mode: load ``declarative_config`` (if set) and give ``dao`` its store.

    Every error is one line naming the file, the entity path and the field; the
    raised :class:`DeclarativeError` stops the node (non-zero exit).
    """
    path = config.declarative_config
    if not path:
        return None
    document = read_file(path)
    try:
        store, result = await validate_document(document, dao)
    except DeclarativeError as e:
        raise DeclarativeError([f"{path}: {line}" for line in e.errors]) from None
    dao.store = store
    log.info(
        "declarative configuration loaded from {path}: {summary}",
        path=path,
        summary=result.summary(),
    )
    return result


class DeclarativeState:
    """The configuration of a DB-less node, replaced whole by ``POST /config``.

    ``replace`` loads a document into a new in-memory store through a private
    DAO; only when all of it is valid is the node DAO's store swapped (one
    assignment on the reactor thread) and the cache flushed, so the router and
    plugin chains rebuild from the new configuration.  A request being proxied
    at that moment finishes on what it already read, and no request ever sees
    half of a configuration.  Replacements are serialised.
    """

    def __init__(self, dao: DAO, cache: Cache) -> None:
        self.dao = dao
        self.cache = cache
        #: called with each document after it is in force: processes that keep
        #: their own copy of the configuration (proxy workers) follow through these
        self.replaced: list[Callable[[Mapping[str, Any]], None]] = []
        self._lock = DeferredLock()

    async def replace(self, document: Mapping[str, Any]) -> LoadResult:
        """Validate and swap in ``document``; :class:`DeclarativeError` leaves all unchanged."""
        await self._lock.acquire()
        try:
            store, result = await validate_document(document, self.dao, previous=self.dao)
            self.dao.store = store
            self.cache.flush()
            log.info("declarative configuration replaced: {summary}", summary=result.summary())
            for fn in list(self.replaced):
                try:
                    fn(document)
                except Exception:
                    log.failure("declarative replacement hook {fn!r} failed", fn=fn)
            return result
        finally:
            self._lock.release()

    async def export(self) -> dict[str, Any]:
        """The configuration in force, as a document."""
        return await export_document(self.dao)
