"""What a chain runs, slot by slot and per consumer: kongtx.plugins.entries."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from kongtx.plugins import entries
from kongtx.plugins.base import BasePlugin
from kongtx.plugins.entries import Lineup, PluginEntry, Slot
from kongtx.store.rows import freeze
from tests.fakes import FakeContext
from tests.unit.test_plugin_runtime import API, CONSUMER, Recorder, RuntimeTestCase


class LineupTests(RuntimeTestCase):
    def lineup(self) -> Lineup:
        """A lineup of every loaded plugin, with the API-or-global entries resolved."""
        slots = []
        for spec in self.specs:
            base = self.successResultOf(
                defer.ensureDeferred(self.runtime.resolve_entry(spec, API["id"], None))
            )
            slots.append(Slot(spec, base))
        return Lineup(self.runtime, API["id"], slots)

    def load_consumer(self, consumer_id: str) -> None:
        """Puts every lookup of ``consumer_id``'s configurations in the cache."""
        for spec in self.specs:
            self.successResultOf(
                defer.ensureDeferred(self.runtime.resolve_entry(spec, API["id"], consumer_id))
            )

    def tags(self, plan: Any) -> list[tuple[int, str, Any]]:
        return [(i, e.spec.name, e.row["config"].get("tag")) for i, e in plan]

    def test_base_plan_is_the_slots_with_an_api_or_global_entry(self) -> None:
        """Without a consumer only the slots configured for the API or globally run."""
        self.add("auth", tag="global")
        self.add("transform", API["id"], tag="api")
        lineup = self.lineup()
        self.assertEqual(
            self.tags(lineup.base_plan), [(0, "auth", "global"), (2, "transform", "api")]
        )
        self.assertEqual(len(lineup.slots), 4)

    def test_a_plan_waits_for_the_cache_then_is_kept(self) -> None:
        """plan() is None until the consumer's lookups are cached, then the same plan is
        reused, with the consumer's own configurations where it has them."""
        self.add("auth", tag="global")
        self.add("limit", API["id"], tag="api")
        self.add("limit", API["id"], CONSUMER["id"], tag="consumer")
        self.add("logger", None, CONSUMER["id"], tag="consumer-only")
        lineup = self.lineup()
        self.assertIsNone(lineup.plan(CONSUMER["id"], 1))
        self.load_consumer(CONSUMER["id"])
        plan = lineup.plan(CONSUMER["id"], 1)
        self.assertEqual(
            self.tags(plan), [(1, "limit", "consumer"), (3, "logger", "consumer-only")]
        )
        queries = len(self.rows.queries)
        self.assertIs(lineup.plan(CONSUMER["id"], 1), plan)
        self.assertEqual(self.tags(lineup.plan(CONSUMER["id"], 0))[0], (0, "auth", "global"))
        self.assertEqual(len(self.rows.queries), queries)

    def test_plan_for_remembers_the_last_consumer_row(self) -> None:
        """plan_for(row, start) is plan(row's id, start); the last immutable consumer
        row's plan is reused for that row and start only (a mutable row is read anew)."""
        self.add("limit", API["id"], tag="api")
        self.add("limit", API["id"], CONSUMER["id"], tag="consumer")
        lineup = self.lineup()
        row = freeze(dict(CONSUMER))
        self.assertIsNone(lineup.plan_for(row, 0))  # not cached yet: nothing remembered
        self.load_consumer(CONSUMER["id"])
        plan = lineup.plan_for(row, 0)
        self.assertIs(lineup._last_consumer, row)
        self.assertEqual(self.tags(plan), [(1, "limit", "consumer")])
        self.assertIs(lineup.plan_for(row, 0), plan)
        self.assertEqual(lineup.plan_for(row, 2), ())
        self.load_consumer("c-other")
        other = {"id": "c-other"}
        self.assertEqual(self.tags(lineup.plan_for(other, 0)), [(1, "limit", "api")])
        self.assertIs(lineup._last_consumer, row)  # a dict row is not remembered

    def test_plans_kept_are_bounded(self) -> None:
        """Past MAX_PLANS consumers the lineup starts over instead of growing."""
        self.patch(entries, "MAX_PLANS", 3)
        self.add("limit", API["id"], tag="api")
        lineup = self.lineup()
        consumers = [f"c{n}" for n in range(4)]
        for consumer_id in consumers:
            self.load_consumer(consumer_id)
        first = lineup.plan(consumers[0], 0)
        for consumer_id in consumers[1:]:
            lineup.plan(consumer_id, 0)
        again = lineup.plan(consumers[0], 0)
        self.assertIsNot(again, first)  # dropped, resolved again
        self.assertEqual(again, first)

    def test_entry_cached_and_entry_for(self) -> None:
        """A slot's entry for the request: the consumer's when it has one, else the
        API-or-global one; entry_cached says when a lookup is not cached yet."""
        self.add("limit", API["id"], tag="api")
        self.add("limit", API["id"], CONSUMER["id"], tag="consumer")
        lineup = self.lineup()
        limit = lineup.slots[1]
        ctx = FakeContext(API)
        found, entry = lineup.entry_cached(ctx, limit)
        self.assertTrue(found)
        self.assertIs(entry, limit.base)
        ctx.consumer = CONSUMER
        self.assertEqual(lineup.entry_cached(ctx, limit), (False, None))
        loaded = self.successResultOf(defer.ensureDeferred(lineup.entry_for(ctx, limit)))
        assert isinstance(loaded, PluginEntry)
        self.assertEqual(loaded.row["config"]["tag"], "consumer")
        self.assertEqual(lineup.entry_cached(ctx, limit), (True, loaded))

    def test_an_entry_knows_which_phases_its_handler_has(self) -> None:
        """Only the phases a handler defines (or sets on itself) are flagged to run."""

        class OnlyLog(Recorder):
            access = BasePlugin.access  # BasePlugin's phases do nothing
            header_filter = BasePlugin.header_filter
            body_filter = BasePlugin.body_filter

        spec = self.specs[0]
        row = self.add("auth")
        entry = PluginEntry(spec, row, OnlyLog({}))
        flags = (entry.has_access, entry.has_header_filter, entry.has_body_filter, entry.has_log)
        self.assertEqual(flags, (False, False, False, True))
