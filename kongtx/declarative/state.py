# -*- test-case-name: tests.unit.test_declarative -*-
"""DB-less mode: a node's configuration in memory, from ``declarative_config`` or ``POST /config``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import DeferredLock

from kongtx.cache import Cache
from kongtx.config import Config
from kongtx.dao import DAO
from kongtx.declarative.document import DeclarativeError, read_file
from kongtx.declarative.load import LoadResult, validate_document
from kongtx.declarative.transfer import export_document
from kongtx.log import logger

log = logger("kongtx.declarative")


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
