# -*- test-case-name: tests.unit.test_plugin_runtime -*-
"""What a chain runs: resolved plugin configurations, their slots, and per consumer which run.

Building a chain and running it are two concerns.  :class:`PluginRuntime
<kongtx.plugins.runtime.PluginRuntime>` resolves plugin rows into :class:`PluginEntry`
objects and lays out one :class:`Slot` per loaded plugin, in priority order;
:class:`kongtx.plugins.chain.Chain` runs the phases.  In between, a chain's
:class:`Lineup` answers which entry each slot runs for a request: the consumer's own
configuration once an auth plugin has set a consumer, else the API's or the global
one.  Nothing here runs a phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from kongtx.plugins.base import BasePlugin, RequestContext
from kongtx.plugins.row_json import is_frozen
from kongtx.plugins.spec import PluginSpec
from kongtx.store.interface import RowView

if TYPE_CHECKING:
    from kongtx.plugins.runtime import PluginRuntime

__all__ = ["MAX_PLANS", "Lineup", "Plan", "PluginEntry", "Slot"]

#: Consumers whose resolved entries a lineup keeps (then it starts over): bounds the
#: memory an API with many active consumers adds (~200 bytes each).
MAX_PLANS = 1024


def _implements(handler: BasePlugin, phase: str) -> bool:
    """Whether ``handler`` has its own ``phase`` (``BasePlugin``'s do nothing)."""
    return getattr(type(handler), phase, None) is not getattr(
        BasePlugin, phase
    ) or phase in getattr(handler, "__dict__", ())


class PluginEntry:
    """One resolved configuration: the plugin row that won and its handler.

    The ``has_*`` flags say which request phases the handler implements: a phase
    it leaves to ``BasePlugin`` (which does nothing) is not called at all.
    """

    __slots__ = (
        "handler",
        "has_access",
        "has_body_filter",
        "has_header_filter",
        "has_log",
        "row",
        "spec",
    )

    def __init__(self, spec: PluginSpec, row: RowView, handler: BasePlugin) -> None:
        self.spec = spec
        self.row = row
        self.handler = handler
        self.has_access = _implements(handler, "access")
        self.has_header_filter = _implements(handler, "header_filter")
        self.has_body_filter = _implements(handler, "body_filter")
        self.has_log = _implements(handler, "log")

    def __repr__(self) -> str:
        return f"<PluginEntry {self.spec.name} id={self.row.get('id')}>"


def may_filter_body(slot: Slot) -> bool:
    """Whether an entry of ``slot`` can have a body filter: its API-or-global entry's,
    or, when consumers may have their own configuration, its handler class's (no
    handler class known yet: assumed so)."""
    if slot.base is not None and slot.base.has_body_filter:
        return True
    if not slot.by_consumer:
        return False
    handler = slot.spec.handler
    return handler is None or getattr(handler, "body_filter", None) is not BasePlugin.body_filter


class Slot:
    """A plugin's place in a chain: its API-or-global entry, and whether it may
    have consumer-specific configurations."""

    __slots__ = ("base", "by_consumer", "spec")

    def __init__(self, spec: PluginSpec, base: PluginEntry | None) -> None:
        self.spec = spec
        self.base = base
        self.by_consumer = not spec.no_consumer


#: ``(slot index, entry)`` of the slots that run, in order
Plan: TypeAlias = tuple[tuple[int, PluginEntry], ...]


class Lineup:
    """The slots of one API's chain, and which of their entries run for a consumer.

    Shared, like its chain, by every request to the API.
    """

    __slots__ = (
        "_last_consumer",
        "_last_plan",
        "_last_start",
        "_plans",
        "_runtime",
        "api_id",
        "base_plan",
        "slots",
    )

    def __init__(self, runtime: PluginRuntime, api_id: str, slots: Sequence[Slot]) -> None:
        self._runtime = runtime
        self.api_id = api_id
        self.slots = tuple(slots)
        #: the slots with an API-or-global entry: all that can run while the request has
        #: no consumer (most slots only wait for a consumer's config)
        self.base_plan: Plan = tuple(
            (i, slot.base) for i, slot in enumerate(self.slots) if slot.base is not None
        )
        #: (consumer id, first slot) -> the entries that run from that slot on for the
        #: consumer: resolved once from the cache, then reused (see :meth:`plan`)
        self._plans: dict[tuple[str, int], Plan] = {}
        #: the consumer row (immutable) and first slot of the last :meth:`plan_for`, and
        #: its plan: a consumer's next request needs no id read, key or lookup
        self._last_consumer: RowView | None = None
        self._last_start = -1
        self._last_plan: Plan = ()

    def plan_for(self, consumer: RowView, start: int) -> Plan | None:
        """:meth:`plan` of the consumer row ``consumer``, the last one's remembered."""
        if consumer is self._last_consumer and start == self._last_start:
            return self._last_plan
        plan = self.plan(consumer["id"], start)
        if plan is not None and is_frozen(consumer):
            self._last_consumer = consumer
            self._last_start = start
            self._last_plan = plan
        return plan

    def plan(self, consumer_id: str, start: int) -> Plan | None:
        """``(slot index, entry)`` of every slot from ``start`` that runs for the consumer.

        Resolving a consumer's configurations costs two cache lookups per slot (most
        slots are plugins not configured for the API, waiting for a consumer's config
        that seldom exists); the answer is kept here.  That is safe because every
        plugin row change that could alter it drops the chain and its lineup: a row
        naming this API clears ``plugins_chain:<api_id>``, a row without an API clears
        every chain (``kongtx.invalidation``), and so does a cache flush.  ``None``
        when a lookup is not cached yet (the chain loads it, slot by slot).
        """
        key = (consumer_id, start)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        runtime = self._runtime
        api_id = self.api_id
        steps: list[tuple[int, PluginEntry]] = []
        slots = self.slots
        for i in range(start, len(slots)):
            slot = slots[i]
            entry = slot.base
            if slot.by_consumer:
                found, specific = runtime.resolve_cached(slot.spec, api_id, consumer_id)
                if not found:
                    return None
                if specific is not None:
                    entry = specific
            if entry is not None:
                steps.append((i, entry))
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
            self._last_consumer = None
        plan = self._plans[key] = tuple(steps)
        return plan

    def entry_cached(self, ctx: RequestContext, slot: Slot) -> tuple[bool, PluginEntry | None]:
        """``slot``'s entry for the request's consumer from the cache only.

        ``(False, None)`` when a lookup is not cached, else ``(True, entry or None)``.
        """
        consumer = ctx.consumer
        if consumer is not None and slot.by_consumer:
            found, specific = self._runtime.resolve_cached(slot.spec, self.api_id, consumer["id"])
            if not found:
                return False, None
            if specific is not None:
                return True, specific
        return True, slot.base

    async def entry_for(self, ctx: RequestContext, slot: Slot) -> PluginEntry | None:
        """The consumer-specific entry when there is one, else the API/global one."""
        consumer = ctx.consumer
        if consumer is not None and slot.by_consumer:
            specific = await self._runtime.resolve_entry(slot.spec, self.api_id, consumer["id"])
            if specific is not None:
                return specific
        return slot.base
