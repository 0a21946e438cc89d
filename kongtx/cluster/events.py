# -*- test-case-name: tests.unit.test_cluster_events -*-
"""Invalidations that are never lost: the durable log, with gossip as the doorbell.

Why (DESIGN.md §4, STYLE.md rule 12): Kong 0.9 lost an invalidation whenever a
Serf event was dropped, and its cache never expired.  Every store write already
appends a :class:`~kongtx.store.interface.ChangeEvent` (origin node, per-origin
``seq``) in the same transaction as the change.  This module:

* **publishes**: after a local commit it reads its own new log rows and sends one
  Serf user event ``kong`` per change, carrying Kong 0.9's payload (SPEC §6.3)
  plus ``origin``, ``seq``, ``prev`` (the seq of the previous event we published;
  the rows in between are ``nodes`` keep-alives nobody needs to hear about) and
  the cache ``keys``.  A master publishes its proxy workers' rows too: each
  worker writes with its own origin (``<node>-worker-<pid>``) and tells the
  master after each commit (:meth:`InvalidationStream.publish`); a worker's
  origin is forgotten once it has exited and its last rows are out
  (:meth:`InvalidationStream.retire`);
* **receives**: ignores its own echoes and anything already applied; when
  ``prev`` is beyond what it has applied for that origin, it first reads the
  missing rows from the log (a gap), then applies; one origin is processed
  serially;
* **catches up** every ``db_update_frequency`` seconds by reading the log's recent
  window, so a lost datagram costs at most that long; when the store was out of
  reach for longer than the retention, the whole cache is flushed;
* **prunes** rows older than the retention in the background.

A ``kong`` event without ``origin`` (from ``serf event`` or a Kong 0.9 node, or
``POST /cluster/events``) is applied from its entity, as Kong did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock

from kongtx import invalidation, log
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.store.interface import ChangeEvent, IStore, Row, StoreUnavailable

EVENT_NAME = "kong"
#: change types as Kong 0.9 named them in its event payloads
KONG_TYPES = {"create": "ENTITY_CREATED", "update": "ENTITY_UPDATED", "delete": "ENTITY_DELETED"}
_OUR_TYPES = {v: k for k, v in KONG_TYPES.items()}
#: rows written by the cluster's own bookkeeping, invalidating nothing
QUIET = frozenset({"nodes"})
#: a payload above this sends the entity's primary key only (the keys travel anyway)
ENTITY_LIMIT = 1024
PAGE = 500


def kong_payload(event: ChangeEvent, primary_key: tuple[str, ...], prev: int) -> dict[str, Any]:
    """Kong 0.9's ``{type, collection, primary_key, entity}`` plus our stream fields."""
    entity = event.old if event.type == "update" else (event.new or event.old)
    payload: dict[str, Any] = {
        "type": KONG_TYPES[event.type],
        "collection": event.collection,
        "primary_key": list(primary_key),
        "entity": entity,
        "origin": event.origin,
        "seq": event.seq,
        "prev": prev,
        "keys": invalidation.keys_for(event.collection, event.old, event.new),
    }
    if len(json.dumps(payload, default=str)) > ENTITY_LIMIT and isinstance(entity, dict):
        payload["entity"] = {k: entity.get(k) for k in primary_key}
    return payload


class InvalidationStream:
    """One node's end of the invalidation stream."""

    log = log.logger()

    def __init__(
        self,
        origin: str,
        store: IStore,
        cache: Cache,
        clock: Clock,
        send: Callable[[bytes], Any],
        find: Callable[[str, dict[str, Any]], Any] | None = None,
        interval: float = 5.0,
        slack: float = 60.0,
        retention: float = 3600.0,
    ) -> None:
        self.origin = origin
        self.store = store
        self.cache = cache
        self.clock = clock
        self.send = send
        self.find = find
        self.interval = interval
        self.slack = slack
        self.retention = retention
        #: origin -> highest seq such that every event up to it has been applied
        self.applied: dict[str, int] = {}
        #: origin -> highest seq read from the log and published, for ours and our workers'
        self.published: dict[str, int] = {origin: 0}
        #: origin -> seq of the last doorbell sent (the next one's ``prev``)
        self._last_sent: dict[str, int] = {origin: 0}
        self._publishing: set[str] = set()
        self._again: set[str] = set()
        #: worker origins to forget once their last rows are published
        self._retiring: set[str] = set()
        #: origin -> when we last heard of it (ms): silent origins are forgotten by ``prune``
        self._heard_ms: dict[str, int] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._started_ms = 0
        self._caught_up_ms = 0
        #: counters (tests and /status)
        self.gaps = 0
        self.caught_up = 0
        self.applied_events = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Find our own last seq and the others' recent ones; start catch-up and pruning."""
        self._started_ms = self.clock.millis()
        self._caught_up_ms = self._started_ms
        published = 0
        while True:
            rows = await self.store.events_after(self.origin, published, PAGE)
            if not rows:
                break
            published = rows[-1].seq
        self.published[self.origin] = self._last_sent[self.origin] = published
        await self.catch_up(self._started_ms - int(self.slack * 1000))
        self.clock.looping_call(self.interval, self.periodic)
        self.clock.looping_call(max(self.retention / 10, 1.0), self.prune)

    async def periodic(self) -> None:
        """The catch-up tick; a store outage longer than the retention flushes the cache."""
        now = self.clock.millis()
        since = self._caught_up_ms - int(self.slack * 1000)
        if now - since > self.retention * 1000:
            self.log.warn("invalidation log unreadable for too long: flushing the cache")
            self.cache.flush()
            since = now - int(self.slack * 1000)
        try:
            await self.catch_up(since)
        except StoreUnavailable as e:
            self.log.warn("invalidation catch-up postponed: {error}", error=e)

    async def prune(self) -> None:
        """Delete log rows older than the retention (every node may; it is idempotent)."""
        try:
            removed = await self.store.prune_events(
                self.clock.millis() - int(self.retention * 1000)
            )
        except StoreUnavailable as e:
            self.log.warn("invalidation log pruning postponed: {error}", error=e)
            return
        if removed:
            self.log.debug("pruned {n} invalidation log rows", n=removed)
        self._forget_silent_origins()

    def _forget_silent_origins(self) -> None:
        """Keep ``applied`` bounded: every restarted worker of every node is a new origin.

        An origin not heard of for longer than the retention has no rows left in the
        log; should it speak again, its first doorbell reads the window as for any
        origin we never met.
        """
        horizon = self.clock.millis() - int((self.retention + self.slack) * 1000)
        for origin in [o for o, at in self._heard_ms.items() if at < horizon]:
            del self._heard_ms[origin]
            if origin not in self._locks or not self._locks[origin].locked:
                self.applied.pop(origin, None)
                self._locks.pop(origin, None)

    # ----------------------------------------------------------------- publishing

    def local_change(self, *_: Any) -> None:
        """DAO listener: a local write committed; publish our new log rows."""
        self.publish(self.origin)

    def publish(self, origin: str) -> None:
        """Publish ``origin``'s new log rows: ours, or one of our proxy workers'.

        A worker's first call starts its origin at seq 0 (a worker's origin is
        new at each start).  One origin is published by one loop at a time; a
        call while it runs makes it read the log once more.
        """
        if origin in self._publishing:
            self._again.add(origin)
            return
        self.published.setdefault(origin, 0)
        self._last_sent.setdefault(origin, 0)
        d = Deferred.fromCoroutine(self._publish(origin))
        d.addErrback(lambda f: self.log.failure("publishing invalidations failed", f))

    def retire(self, origin: str) -> None:
        """A worker of ours exited: publish its last rows, then forget its origin."""
        if origin == self.origin or origin not in self.published:
            return
        self._retiring.add(origin)
        self.publish(origin)

    async def _publish(self, origin: str) -> None:
        self._publishing.add(origin)
        try:
            self._again.add(origin)
            while origin in self._again:
                self._again.discard(origin)
                while True:
                    rows = await self.store.events_after(origin, self.published[origin], PAGE)
                    for event in rows:
                        self.published[origin] = max(self.published[origin], event.seq)
                        if event.collection in QUIET:
                            continue
                        self._doorbell(event)
                    if len(rows) < PAGE:
                        break
            if origin != self.origin:
                # what we publish for a worker we have applied (the master's
                # cache took its keys from the worker's control line)
                done = max(self.applied.get(origin, 0), self.published[origin])
                self.applied[origin] = done
                self._heard_ms[origin] = self.clock.millis()
        finally:
            self._publishing.discard(origin)
            if origin in self._retiring and origin not in self._again:
                self._retiring.discard(origin)
                for state in (self.published, self._last_sent):
                    state.pop(origin, None)

    def _doorbell(self, event: ChangeEvent) -> None:
        table = self.store.tables.get(event.collection)
        pk = tuple(table.primary_key) if table is not None else ("id",)
        payload = kong_payload(event, pk, self._last_sent.get(event.origin, 0))
        self._last_sent[event.origin] = event.seq
        try:
            self.send(json.dumps(payload, separators=(",", ":"), default=str).encode())
        except Exception:
            self.log.failure("could not gossip invalidation {seq}", seq=event.seq)

    # ----------------------------------------------------------------- receiving

    async def on_event(self, payload: bytes) -> None:
        """A ``kong`` user event arrived (gossip, ``serf event``, or the Admin API)."""
        try:
            data = json.loads(payload)
        except ValueError:
            self.log.debug("ignored a kong event that is not JSON")
            return
        if not isinstance(data, dict):
            return
        origin = data.get("origin")
        if isinstance(origin, str) and isinstance(data.get("seq"), int):
            if origin not in self._last_sent:  # not our own (or our workers') echo
                await self.on_doorbell(origin, data["seq"], data.get("prev"), data.get("keys"))
            return
        await self.apply_kong_event(data)

    async def on_doorbell(self, origin: str, seq: int, prev: Any, keys: Any) -> None:
        """Apply one announced change, filling a gap from the log first."""
        lock = self._locks.setdefault(origin, DeferredLock())
        await lock.acquire()
        try:
            done = self.applied.get(origin)
            if done is not None and seq <= done:
                return
            if isinstance(keys, list):
                self._apply([k for k in keys if isinstance(k, str)])
            prev_seq = prev if isinstance(prev, int) else seq - 1
            if done is None and prev == 0:
                # an origin's very first announcement (a new node, a master's new
                # worker): all it wrote before is its own few rows, none announced
                await self._fill(origin, 0)
            elif done is None:
                # first news from this origin since we started: read the window
                await self.catch_up(self._started_ms - int(self.slack * 1000))
            elif prev_seq > done:
                self.gaps += 1
                await self._fill(origin, done)
            self.applied[origin] = max(self.applied.get(origin, 0), seq)
            self._heard_ms[origin] = self.clock.millis()
            self.applied_events += 1
        finally:
            lock.release()

    async def _fill(self, origin: str, after: int) -> None:
        while True:
            rows = await self.store.events_after(origin, after, PAGE)
            for event in rows:
                self._apply_event(event)
                after = event.seq
            if len(rows) < PAGE:
                break

    async def catch_up(self, since_ms: int) -> int:
        """Apply every logged change since ``since_ms`` not applied yet; returns how many."""
        started = self.clock.millis()
        applied = 0
        at = since_ms
        seen: set[tuple[str, int]] = set()
        while True:
            rows = await self.store.events_since(at, PAGE)
            fresh = [e for e in rows if (e.origin, e.seq) not in seen]
            for event in fresh:
                seen.add((event.origin, event.seq))
                if event.origin == self.origin:
                    continue
                if event.seq > self.applied.get(event.origin, 0):
                    self._apply_event(event)
                    applied += 1
            if len(rows) < PAGE or not fresh:
                break
            at = rows[-1].at
        self._caught_up_ms = started
        self.caught_up += applied
        return applied

    def _apply_event(self, event: ChangeEvent) -> None:
        self._apply(invalidation.keys_for(event.collection, event.old, event.new))
        if event.seq > self.applied.get(event.origin, 0):
            self.applied[event.origin] = event.seq
        self._heard_ms[event.origin] = self.clock.millis()

    def _apply(self, keys: Iterable[str]) -> None:
        invalidation.apply(self.cache, keys)

    async def apply_kong_event(self, data: dict[str, Any]) -> list[str]:
        """Apply a Kong 0.9 event payload to our cache (see :func:`apply_kong_event`)."""
        return await apply_kong_event(self.cache, self.find, data)


async def apply_kong_event(
    cache: Cache, find: Callable[[str, dict[str, Any]], Any] | None, data: dict[str, Any]
) -> list[str]:
    """Kong 0.9's handling of ``{type, collection, primary_key, entity}``: returns the keys.

    For an update the current row is re-read (Kong did, to give hooks both rows),
    so the keys of the new values are cleared too.  Unknown types (Kong's
    ``MEMBER-*`` wrappers) and malformed payloads invalidate nothing.
    """
    kind = _OUR_TYPES.get(str(data.get("type", "")).upper())
    collection = data.get("collection")
    entity = data.get("entity")
    if kind is None or not isinstance(collection, str) or not isinstance(entity, dict):
        return []
    current: Row | None = None
    if kind == "update" and find is not None:
        pk = data.get("primary_key") or ["id"]
        key = {k: entity.get(k) for k in pk if isinstance(k, str)}
        try:
            current = await find(collection, key)
        except Exception:
            InvalidationStream.log.failure(
                "re-reading {collection} for an event failed", collection=collection
            )
    try:
        keys = invalidation.keys_for(collection, entity, current)
    except (KeyError, TypeError):
        return []
    invalidation.apply(cache, keys)
    return keys
