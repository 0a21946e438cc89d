"""The plugin runtime: config resolution, compiled chains and the phases (SPEC §4.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx import invalidation
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.invalidation import keys_for
from kongtx.plugins import runtime as runtime_module
from kongtx.plugins.base import BasePlugin, PhaseResult, RequestContext
from kongtx.plugins.entries import PluginEntry, Slot, may_filter_body
from kongtx.plugins.runtime import Chain, PluginRuntime, chain_key
from kongtx.plugins.spec import PluginSpec
from kongtx.proxy.request import ApiTarget
from kongtx.store.schemas import Schema
from tests.fakes import (
    FakeContext,
    FakePluginRows,
    FakeRegistry,
    plugin_row,
    self_signed_certificate,
)

API = {"id": "a0000000-0000-4000-8000-000000000001", "name": "api"}
OTHER_API = {"id": "a0000000-0000-4000-8000-000000000002", "name": "other"}
CONSUMER = {"id": "c0000000-0000-4000-8000-000000000001", "username": "bob"}


class Recorder(BasePlugin):
    """A handler that records every phase call in a shared journal."""

    journal: ClassVar[list[tuple[str, str, Any]]] = []
    built: ClassVar[list[Mapping[str, Any]]] = []
    NAME = "recorder"

    def __init__(self, config: Mapping[str, Any], services: Any = None) -> None:
        super().__init__(config, services)
        type(self).built.append(config)

    def _note(self, phase: str, ctx: Any) -> None:
        status = getattr(ctx, "status", None)
        self.journal.append((self.NAME, phase, self.config.get("tag", status)))

    def access(self, ctx: RequestContext) -> PhaseResult:
        self._note("access", ctx)
        if self.config.get("reject"):
            ctx.respond(int(self.config["reject"]), {"message": "no"})
        if self.config.get("authenticate"):
            ctx.consumer = CONSUMER
        return None

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        self._note("header_filter", ctx)
        return None

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        self._note("body_filter", ctx)
        return chunk + self.NAME[:1].encode()

    def log(self, ctx: RequestContext) -> PhaseResult:
        self.journal.append((self.NAME, "log", ctx.status))
        return None


def handler_class(name: str) -> type[Recorder]:
    return type(f"{name}Handler", (Recorder,), {"NAME": name})


def spec(name: str, priority: int, no_consumer: bool = False, handler: Any = True) -> PluginSpec:
    return PluginSpec(
        name=name,
        priority=priority,
        config_schema=Schema(fields={}),
        no_consumer=no_consumer,
        handler=handler_class(name) if handler is True else handler,
    )


class RuntimeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        Recorder.journal = []
        Recorder.built = []
        self.reactor = task.Clock()
        self.clock = Clock(self.reactor)
        self.cache = Cache(self.clock)
        self.rows = FakePluginRows()
        self.specs = [
            spec("auth", 1000, no_consumer=True),
            spec("limit", 900),
            spec("transform", 800),
            spec("logger", 1),
        ]
        self.registry = FakeRegistry(self.specs)
        self.runtime = PluginRuntime(self.rows, self.cache, self.registry, self.clock)

    def add(
        self, name: str, api_id: str | None = None, consumer_id: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        enabled = kw.pop("enabled", True)
        row = plugin_row(name, api_id, consumer_id, config=kw, enabled=enabled)
        self.rows.rows.append(row)
        return row

    def chain(self, api: dict[str, Any] = API) -> Chain:
        return self.successResultOf(defer.ensureDeferred(self.runtime.chain_for(api)))

    def resolve(self, name: str, api_id: str | None, consumer_id: str | None = None) -> Any:
        return self.successResultOf(
            defer.ensureDeferred(self.runtime.resolve(name, api_id, consumer_id))
        )

    def run_access(self, chain: Chain, ctx: FakeContext) -> None:
        result = chain.access(ctx)
        if result is not None:
            self.successResultOf(defer.ensureDeferred(_wait(result)))


async def _wait(awaitable: Any) -> None:
    await awaitable


class ResolutionTests(RuntimeTestCase):
    def test_consumer_and_api_first(self) -> None:
        """(api, consumer) wins over (consumer), (api) and global."""
        self.add("limit", tag="global")
        self.add("limit", API["id"], tag="api")
        self.add("limit", None, CONSUMER["id"], tag="consumer")
        self.add("limit", API["id"], CONSUMER["id"], tag="both")
        self.assertEqual(self.resolve("limit", API["id"], CONSUMER["id"])["config"]["tag"], "both")

    def test_order_falls_back_level_by_level(self) -> None:
        """Without (api, consumer): consumer, then api, then global, in that order."""
        self.add("limit", tag="global")
        self.add("limit", API["id"], tag="api")
        self.add("limit", None, CONSUMER["id"], tag="consumer")
        self.assertEqual(
            self.resolve("limit", API["id"], CONSUMER["id"])["config"]["tag"], "consumer"
        )
        self.assertEqual(self.resolve("limit", API["id"])["config"]["tag"], "api")
        self.assertEqual(self.resolve("limit", OTHER_API["id"])["config"]["tag"], "global")

    def test_disabled_row_falls_through(self) -> None:
        """A disabled specific row does not mask a more general enabled one."""
        self.add("limit", tag="global")
        self.add("limit", API["id"], tag="api", enabled=False)
        self.add("limit", API["id"], CONSUMER["id"], tag="both", enabled=False)
        self.assertEqual(
            self.resolve("limit", API["id"], CONSUMER["id"])["config"]["tag"], "global"
        )

    def test_nothing_enabled(self) -> None:
        """Only disabled rows: the plugin does not apply."""
        self.add("limit", API["id"], enabled=False)
        self.assertIsNone(self.resolve("limit", API["id"]))

    def test_exact_match_on_nulls(self) -> None:
        """A consumer-specific row is not an API-level config: NULLs match exactly."""
        self.add("limit", API["id"], CONSUMER["id"], tag="both")
        self.add("limit", None, CONSUMER["id"], tag="consumer")
        self.assertIsNone(self.resolve("limit", API["id"]))

    def test_no_consumer_plugin_ignores_consumer_rows(self) -> None:
        """A no_consumer plugin never looks at consumer-specific rows."""
        self.add("auth", API["id"], CONSUMER["id"], tag="consumer")
        self.add("auth", API["id"], tag="api")
        self.assertEqual(self.resolve("auth", API["id"], CONSUMER["id"])["config"]["tag"], "api")

    def test_lookups_cached_with_kong_keys(self) -> None:
        """Each level is cached under plugins:<name>[:<api_id>][:<consumer_id>]."""
        row = self.add("limit", API["id"], tag="api")
        self.resolve("limit", API["id"], CONSUMER["id"])
        self.assertEqual(
            self.cache.peek(f"plugins:limit:{API['id']}:{CONSUMER['id']}"), (True, None)
        )
        self.assertEqual(self.cache.peek(f"plugins:limit:{CONSUMER['id']}"), (True, None))
        self.assertEqual(self.cache.peek(f"plugins:limit:{API['id']}")[1]["id"], row["id"])
        self.assertFalse(self.cache.peek("plugins:limit")[0])

    def test_negative_entries_spare_the_datastore(self) -> None:
        """A miss is cached: the second lookup queries nothing."""
        self.assertIsNone(self.resolve("limit", API["id"]))
        queries = len(self.rows.queries)
        self.assertEqual(queries, 2)
        self.assertIsNone(self.resolve("limit", API["id"]))
        self.assertEqual(len(self.rows.queries), queries)
        self.assertEqual(self.cache.peek("plugins:limit"), (True, None))

    def test_query_filters_on_non_null_ids(self) -> None:
        """The datastore is asked by name and the non-null ids only, as Kong does."""
        self.resolve("limit", API["id"])
        self.assertEqual(
            self.rows.queries,
            [("plugins", {"name": "limit", "api_id": API["id"]}), ("plugins", {"name": "limit"})],
        )

    def test_datastore_error_is_not_cached(self) -> None:
        """A failing lookup reaches the caller and leaves nothing cached."""
        self.rows.fail = RuntimeError("down")
        d = defer.ensureDeferred(self.runtime.resolve("limit", API["id"]))
        self.failureResultOf(d, RuntimeError)
        self.assertFalse(self.cache.peek(f"plugins:limit:{API['id']}")[0])


class ChainTests(RuntimeTestCase):
    def test_priority_order_ties_by_name(self) -> None:
        """Highest priority first; equal priorities ordered by name."""
        self.specs.append(spec("another", 800))
        for name in ("logger", "transform", "auth", "another", "limit"):
            self.add(name)
        self.assertEqual(self.chain().names(), ["auth", "limit", "another", "transform", "logger"])

    def test_api_config_beats_global_in_chain(self) -> None:
        """The chain holds the API-level row when there is one, else the global one."""
        self.add("limit", tag="global")
        self.add("limit", API["id"], tag="api")
        self.add("transform", tag="global")
        entries = {e.spec.name: e.row["config"]["tag"] for e in self.chain().entries()}
        self.assertEqual(entries, {"limit": "api", "transform": "global"})

    def test_plugins_without_handler_are_skipped(self) -> None:
        """A loaded plugin with no request-time handler takes no place in the chain."""
        self.specs.append(spec("schemaonly", 500, handler=None))
        self.add("schemaonly")
        self.add("limit")
        self.assertEqual(self.chain().names(), ["limit"])

    def test_chain_cached_per_api(self) -> None:
        """A chain is compiled once per API and then served from the cache."""
        self.add("limit")
        first = self.chain()
        queries = len(self.rows.queries)
        self.assertIs(self.chain(), first)
        self.assertIs(self.runtime.cached_chain(API), first)
        self.assertEqual(len(self.rows.queries), queries)
        self.assertIsNot(self.chain(OTHER_API), first)

    def test_handlers_reused_across_rebuilds(self) -> None:
        """Rebuilding a chain after an unrelated change keeps the handler instances."""
        self.add("limit")
        first = self.chain()
        row = self.add("transform", API["id"])
        invalidation.apply(self.cache, invalidation.keys_for("plugins", None, row))
        second = self.chain()
        self.assertIsNot(second, first)
        self.assertEqual(second.names(), ["limit", "transform"])
        self.assertIs(second.entries()[0].handler, first.entries()[0].handler)
        self.assertEqual(len(Recorder.built), 2)

    def test_handler_rebuilt_when_config_changes(self) -> None:
        """An updated row gets a new handler built from its new config."""
        row = self.add("limit", tag="v1")
        first = self.chain()
        old = dict(row)
        row["config"] = {"tag": "v2"}
        invalidation.apply(self.cache, invalidation.keys_for("plugins", old, row))
        second = self.chain()
        self.assertIsNot(second.entries()[0].handler, first.entries()[0].handler)
        self.assertEqual(second.entries()[0].handler.config, {"tag": "v2"})

    def test_global_change_clears_every_chain(self) -> None:
        """A new global plugin reaches the chains of every API."""
        self.chain(API)
        self.chain(OTHER_API)
        row = self.add("logger")
        invalidation.apply(self.cache, invalidation.keys_for("plugins", None, row))
        self.assertIsNone(self.runtime.cached_chain(API))
        self.assertEqual(self.chain(API).names(), ["logger"])
        self.assertEqual(self.chain(OTHER_API).names(), ["logger"])

    def test_broken_handler_fails_closed(self) -> None:
        """A handler that cannot be built fails the chain instead of silently skipping the plugin."""

        class Broken(BasePlugin):
            def __init__(self, config: Mapping[str, Any], services: Any = None) -> None:
                raise ValueError("bad config")

        self.specs.append(spec("broken", 1000, handler=Broken))
        self.add("broken")
        self.failureResultOf(defer.ensureDeferred(self.runtime.chain_for(API)), ValueError)
        self.assertIsNone(self.runtime.cached_chain(API))

    def test_handler_pool_is_bounded(self) -> None:
        """Handlers kept for reuse are bounded, oldest forgotten first."""
        self.patch(runtime_module, "MAX_HANDLERS", 2)
        for i in range(3):
            self.add("limit", f"api-{i}")
            self.chain({"id": f"api-{i}"})
        self.assertEqual(list(self.runtime._entries), ["limit:api-1:None", "limit:api-2:None"])

    def test_invalidation_during_compile_is_not_lost(self) -> None:
        """A chain whose compile raced an invalidation is not stored."""
        gate: Deferred[list[Any]] = Deferred()
        original = self.rows.find_all
        calls = []

        async def slow(collection: str, filters: Mapping[str, Any]) -> list[Any]:
            calls.append(filters)
            if len(calls) == 1:
                await gate
            return await original(collection, filters)

        self.rows.find_all = slow  # type: ignore[method-assign]
        d = defer.ensureDeferred(self.runtime.chain_for(API))
        self.cache.invalidate(chain_key(API["id"]))
        gate.callback([])
        self.successResultOf(d)
        self.assertIsNone(self.runtime.cached_chain(API))

    def test_the_routers_chain_key_finds_the_compiled_chain(self) -> None:
        """The pipeline looks a chain up by the key its router's ApiTarget made once: the
        same key the runtime stores under and an API change invalidates (a different
        key would send every request down the general path, compiling nothing wrong)."""
        chain = self.successResultOf(defer.ensureDeferred(self.runtime.chain_for(API)))
        key = ApiTarget(API).chain_key
        self.assertIs(self.runtime.chain_at(key), chain)
        self.assertIn(key, keys_for("apis", None, API))
        self.cache.invalidate(key)
        self.assertIsNone(self.runtime.chain_at(key))


class AccessTests(RuntimeTestCase):
    def test_runs_in_order_and_stays_synchronous(self) -> None:
        """With everything cached, access, header_filter and log allocate no Deferred."""
        for name in ("auth", "limit", "transform", "logger"):
            self.add(name)
        chain = self.chain()
        self.run_access(chain, FakeContext(API))  # warm the consumer-less path
        Recorder.journal = []
        created: list[Deferred[Any]] = []
        init = Deferred.__init__

        def counting(d: Deferred[Any], *a: Any, **kw: Any) -> None:
            created.append(d)
            init(d, *a, **kw)

        self.patch(Deferred, "__init__", counting)
        ctx = FakeContext(API)
        self.assertIsNone(chain.access(ctx))
        self.assertIsNone(chain.header_filter(ctx))
        self.assertEqual(chain.body_filter(ctx, b">", True), b">altl")
        self.assertIsNone(chain.log(ctx))
        self.assertEqual(created, [])
        self.assertEqual(
            [(n, p) for n, p, _ in Recorder.journal if p == "access"],
            [
                ("auth", "access"),
                ("limit", "access"),
                ("transform", "access"),
                ("logger", "access"),
            ],
        )

    def test_short_circuit(self) -> None:
        """A plugin that responds stops later access phases; header_filter only for those that ran."""
        self.add("auth", reject=401)
        self.add("limit")
        self.add("transform")
        chain = self.chain()
        ctx = FakeContext(API)
        self.assertIsNone(chain.access(ctx))
        self.assertEqual(ctx.response, (401, {"message": "no"}, {}))
        chain.header_filter(ctx)
        phases = [(n, p) for n, p, _ in Recorder.journal]
        self.assertEqual(phases, [("auth", "access"), ("auth", "header_filter")])

    def test_log_phase_for_rejected_requests(self) -> None:
        """Every configured plugin logs a rejected request, with the status sent (our difference)."""
        self.add("auth", reject=403)
        self.add("transform")
        self.add("logger")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        chain.header_filter(ctx)
        self.assertIsNone(chain.log(ctx))
        logs = [(n, s) for n, p, s in Recorder.journal if p == "log"]
        self.assertEqual(logs, [("auth", 403), ("transform", 403), ("logger", 403)])

    def test_consumer_configs_after_auth(self) -> None:
        """Once auth sets the consumer, later plugins get their consumer-specific config."""
        self.add("auth", authenticate=True)
        self.add("limit", API["id"], tag="api")
        self.add("limit", API["id"], CONSUMER["id"], tag="consumer")
        self.add("transform", None, CONSUMER["id"], tag="consumer-only")
        chain = self.chain()
        self.assertEqual(chain.names(), ["auth", "limit"])
        ctx = FakeContext(API)
        self.run_access(chain, ctx)
        self.assertEqual(
            [(n, t) for n, p, t in Recorder.journal if p == "access"],
            [("auth", 200), ("limit", "consumer"), ("transform", "consumer-only")],
        )
        chain.header_filter(ctx)
        self.assertEqual(
            [n for n, p, _ in Recorder.journal if p == "header_filter"],
            ["auth", "limit", "transform"],
        )

    def test_consumer_lookup_cached_after_first_request(self) -> None:
        """The consumer lookups of the first request make the next one synchronous."""
        self.add("auth", authenticate=True)
        self.add("limit", API["id"], CONSUMER["id"], tag="consumer")
        chain = self.chain()
        first = chain.access(FakeContext(API))
        self.assertIsNotNone(first)  # the consumer's rows were not cached yet
        self.successResultOf(defer.ensureDeferred(_wait(first)))
        queries = len(self.rows.queries)
        ctx = FakeContext(API)
        self.assertIsNone(chain.access(ctx))
        self.assertEqual(len(self.rows.queries), queries)
        self.assertEqual([t for n, p, t in Recorder.journal if n == "limit"][-1], "consumer")

    def test_higher_priority_plugins_never_get_consumer_configs(self) -> None:
        """Configs are resolved in priority order: plugins before auth see no consumer."""
        self.specs.append(spec("early", 1500))
        self.add("auth", authenticate=True)
        self.add("early", None, CONSUMER["id"], tag="consumer")
        chain = self.chain()
        ctx = FakeContext(API)
        self.run_access(chain, ctx)
        self.assertNotIn("early", [n for n, _, _ in Recorder.journal])

    def test_async_phase_then_the_rest(self) -> None:
        """A phase that waits makes access awaitable; later plugins run after it."""
        waits: Deferred[None] = Deferred()

        class Waiting(BasePlugin):
            def access(self, ctx: RequestContext) -> PhaseResult:
                Recorder.journal.append(("waiting", "access", None))
                return waits

        self.specs.append(spec("waiting", 950, handler=Waiting))
        self.add("waiting")
        self.add("limit")
        self.add("transform", reject=429)
        self.add("logger")
        chain = self.chain()
        ctx = FakeContext(API)
        pending = chain.access(ctx)
        self.assertIsNotNone(pending)
        d = defer.ensureDeferred(_wait(pending))
        self.assertNoResult(d)
        self.assertEqual([n for n, _, _ in Recorder.journal], ["waiting"])
        waits.callback(None)
        self.successResultOf(d)
        self.assertEqual([n for n, _, _ in Recorder.journal], ["waiting", "limit", "transform"])
        self.assertEqual(ctx.status, 429)

    def test_async_header_filter(self) -> None:
        """A header_filter that waits makes the phase awaitable; the next ones follow."""
        waits: Deferred[None] = Deferred()

        class Waiting(BasePlugin):
            def header_filter(self, ctx: RequestContext) -> PhaseResult:
                return waits

        self.specs.append(spec("waiting", 950, handler=Waiting))
        self.add("waiting")
        self.add("limit")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        Recorder.journal = []
        d = defer.ensureDeferred(_wait(chain.header_filter(ctx)))
        self.assertEqual(Recorder.journal, [])
        waits.callback(None)
        self.successResultOf(d)
        self.assertEqual([(n, p) for n, p, _ in Recorder.journal], [("limit", "header_filter")])

    def test_body_filter_only_for_plugins_that_ran(self) -> None:
        """Body chunks pass through the plugins that ran access, in order."""
        self.add("auth")
        self.add("limit", reject=429)
        self.add("transform")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        self.assertEqual(chain.body_filter(ctx, b"x", False), b"xal")

    def test_phases_without_access_are_noops(self) -> None:
        """header_filter/body_filter on a request whose access never ran do nothing."""
        self.add("limit")
        chain = self.chain()
        ctx = FakeContext(API)
        self.assertIsNone(chain.header_filter(ctx))
        self.assertEqual(chain.body_filter(ctx, b"x", True), b"x")
        self.assertEqual(Recorder.journal, [])

    def test_only_the_phases_a_handler_implements_are_called(self) -> None:
        """A phase left to BasePlugin (a no-op) is skipped; one set on the instance is not."""

        class OnlyLog(BasePlugin):
            def log(self, ctx: RequestContext) -> PhaseResult:
                return None

        entry = PluginEntry(spec("only-log", 1), plugin_row("only-log"), OnlyLog({}))
        self.assertEqual(
            (entry.has_access, entry.has_header_filter, entry.has_body_filter, entry.has_log),
            (False, False, False, True),
        )
        handler = OnlyLog({})
        handler.body_filter = lambda ctx, chunk, last: chunk.upper()  # type: ignore[method-assign]
        self.assertTrue(
            PluginEntry(spec("only-log", 1), plugin_row("only-log"), handler).has_body_filter
        )

    def test_chains_without_body_filters_skip_the_phase(self) -> None:
        """A chain none of whose plugins (nor their consumers' configurations) can
        filter the body passes each chunk as it is; a slot whose consumers may have a
        filtering configuration (or whose class is not known yet) keeps the phase."""

        class NoFilter(BasePlugin):
            def log(self, ctx: RequestContext) -> PhaseResult:
                return None

        class Filter(NoFilter):
            def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
                return chunk.upper()

        plain = PluginEntry(spec("plain", 1, handler=NoFilter), plugin_row("plain"), NoFilter({}))
        self.assertFalse(may_filter_body(Slot(plain.spec, plain)))
        self.assertFalse(may_filter_body(Slot(spec("c", 1, handler=NoFilter), None)))
        self.assertTrue(may_filter_body(Slot(spec("c", 1, handler=Filter), None)))
        self.assertFalse(may_filter_body(Slot(spec("c", 1, True, handler=Filter), None)))
        self.assertTrue(may_filter_body(Slot(spec("c", 1, handler=None), None)))
        self.assertTrue(
            may_filter_body(Slot(plain.spec, PluginEntry(plain.spec, plain.row, Filter({}))))
        )
        self.specs[:] = [spec("plain", 1, handler=NoFilter)]
        self.add("plain")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        self.assertEqual(chain.body_filter(ctx, b"x", True), b"x")
        self.assertFalse(chain._filters_body)


class LogTests(RuntimeTestCase):
    def test_log_errors_are_logged_not_raised(self) -> None:
        """A log phase that raises is logged; the others still run."""

        class Broken(BasePlugin):
            def log(self, ctx: RequestContext) -> PhaseResult:
                raise ValueError("boom")

        self.specs.append(spec("broken", 950, handler=Broken))
        self.add("broken")
        self.add("logger")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        self.assertIsNone(chain.log(ctx))
        self.assertEqual([n for n, p, _ in Recorder.journal if p == "log"], ["logger"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_async_log_failures_are_logged(self) -> None:
        """Waiting log phases run side by side; a failing one is logged, the result still fires."""
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        waits = iter([first, second])

        class Slow(BasePlugin):
            def log(self, ctx: RequestContext) -> PhaseResult:
                return next(waits)

        self.specs += [spec("slow1", 950, handler=Slow), spec("slow2", 940, handler=Slow)]
        self.add("slow1")
        self.add("slow2")
        chain = self.chain()
        ctx = FakeContext(API)
        chain.access(ctx)
        done = chain.log(ctx)
        assert done is not None
        self.assertNoResult(done)
        second.callback(None)
        self.assertNoResult(done)
        first.errback(ValueError("slow failure"))
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unreached_plugins_resolve_their_config_for_log(self) -> None:
        """After a rejection, unreached plugins log with the consumer config they would have had."""
        self.add("auth", authenticate=True)
        self.add("limit", API["id"], reject=429)
        self.add("logger", tag="global")
        self.add("logger", None, CONSUMER["id"], tag="consumer")
        chain = self.chain()
        ctx = FakeContext(API)
        self.run_access(chain, ctx)
        Recorder.journal = []
        done = chain.log(ctx)
        assert done is not None  # the consumer's logger config is not cached yet
        self.successResultOf(done)
        self.assertEqual(
            [n for n, p, _ in Recorder.journal if p == "log"], ["auth", "limit", "logger"]
        )
        logger = [h for h in Recorder.built if h.get("tag") == "consumer"]
        self.assertEqual(len(logger), 1)

    def test_log_lookup_failure_is_logged(self) -> None:
        """A datastore failure while resolving an unreached plugin is logged, not raised."""
        self.add("auth", authenticate=True, reject=401)
        self.add("logger")
        chain = self.chain()
        ctx = FakeContext(API)
        self.run_access(chain, ctx)
        self.rows.fail = RuntimeError("down")
        done = chain.log(ctx)
        assert done is not None
        self.assertIsNone(self.successResultOf(done))
        # one per unreached plugin (limit, transform, logger), each logged and skipped
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.assertEqual([n for n, p, _ in Recorder.journal if p == "log"], ["auth"])


class CertificateTests(RuntimeTestCase):
    def test_certificate_phase(self) -> None:
        """The certificate phase lets a plugin pick the API's certificate for the SNI."""

        class Cert(BasePlugin):
            def certificate(self, ctx: Any) -> None:
                ctx.set_certificate(ctx.sni.encode(), ctx.api["id"].encode())

        self.specs.append(spec("ssl", 3000, no_consumer=True, handler=Cert))
        self.add("ssl", API["id"])
        self.assertEqual(
            self.chain().certificate("example.org"), (b"example.org", API["id"].encode())
        )

    def test_handlers_receive_the_services(self) -> None:
        """Every handler is built with the runtime's PluginServices (dao, cache, clock)."""
        self.add("limit")
        handler = self.chain().entries()[0].handler
        self.assertIs(handler.services, self.runtime.services)
        self.assertIs(handler.services.cache, self.runtime.services.cache)

    def test_no_certificate_plugin(self) -> None:
        """Without a certificate plugin the default certificate is used (None)."""
        self.add("limit")
        self.assertIsNone(self.chain().certificate("example.org"))


class RealRegistryAndDaoTests(SynchronousTestCase):
    """The runtime wired as the node wires it: real registry, DAO, MemoryStore, invalidation."""

    def setUp(self) -> None:
        from kongtx.dao import DAO
        from kongtx.plugins.registry import PluginRegistry
        from kongtx.store.memory import MemoryStore
        from kongtx.store.tables import TABLES

        self.clock = Clock(task.Clock())
        self.cache = Cache(self.clock)
        self.registry = PluginRegistry.load(["tests.fixtures.example_plugin"])
        self.dao = DAO(MemoryStore(TABLES, "node-a", self.clock), self.registry, self.clock)
        self.dao.add_listener(invalidation.listener(self.cache))
        self.runtime = PluginRuntime(self.dao, self.cache, self.registry, self.clock)
        self.api = self.wait(
            self.dao.insert(
                "apis", {"request_host": "example.org", "upstream_url": "http://upstream"}
            )
        )

    def wait(self, coro: Any) -> Any:
        return self.successResultOf(defer.ensureDeferred(coro))

    def plugin(self, name: str, **params: Any) -> Any:
        return self.wait(self.dao.insert("plugins", {"name": name, **params}))

    def request(self, **kw: Any) -> FakeContext:
        chain = self.wait(self.runtime.chain_for(self.api))
        ctx = FakeContext(self.api, **kw)
        pending = chain.access(ctx)
        if pending is not None:
            self.wait(_wait(pending))
        pending = chain.header_filter(ctx)
        if pending is not None:
            self.wait(_wait(pending))
        chain.log(ctx)
        return ctx

    def test_custom_plugin_loaded_through_the_registry(self) -> None:
        """The example plugin from custom_plugins runs with its validated config and defaults."""
        self.plugin("example-stamp", api_id=self.api["id"], config={"value": "stamped"})
        ctx = self.request()
        self.assertEqual(ctx.headers.get("X-Example"), "stamped")
        self.assertEqual(ctx.response_headers.get("X-Example"), "stamped")

    def test_bundled_handlers_in_priority_order(self) -> None:
        """Bundled handlers come from the registry and run highest priority first."""
        self.plugin("correlation-id", config={"echo_downstream": True})
        self.plugin("cors", api_id=self.api["id"])
        self.plugin("example-stamp", config={"value": "v", "header_name": "X-Stamp"})
        self.plugin(
            "request-transformer",
            api_id=self.api["id"],
            config={"add": {"headers": ["X-Added:yes"]}},
        )
        chain = self.wait(self.runtime.chain_for(self.api))
        self.assertEqual(
            chain.names(), ["cors", "request-transformer", "example-stamp", "correlation-id"]
        )
        ctx = self.request()
        self.assertEqual(ctx.headers.get("X-Added"), "yes")
        self.assertEqual(ctx.headers.get("X-Stamp"), "v")
        self.assertEqual(ctx.response_headers.get("Access-Control-Allow-Origin"), "*")
        self.assertIsNotNone(ctx.response_headers.get("Kong-Request-ID"))

    def test_admin_changes_reach_the_next_request(self) -> None:
        """Updating, disabling and deleting rows through the DAO change the next request's config."""
        self.plugin("example-stamp", config={"value": "global"})
        row = self.plugin("example-stamp", api_id=self.api["id"], config={"value": "api"})
        self.assertEqual(self.request().headers.get("X-Example"), "api")
        self.wait(self.dao.update("plugins", {"id": row["id"]}, {"config": {"value": "api-2"}}))
        self.assertEqual(self.request().headers.get("X-Example"), "api-2")
        self.wait(self.dao.update("plugins", {"id": row["id"]}, {"enabled": False}))
        self.assertEqual(self.request().headers.get("X-Example"), "global")
        self.wait(self.dao.delete("plugins", {"id": row["id"]}))
        self.assertEqual(self.request().headers.get("X-Example"), "global")

    def test_consumer_configs_kept_in_the_chain_follow_admin_changes(self) -> None:
        """A consumer's resolved configurations are kept in the chain (no lookups per
        request); adding, updating, disabling and deleting that consumer's rows, for
        the API or for every API, reaches the next request."""
        consumer = self.wait(self.dao.insert("consumers", {"username": "bob"}))

        def stamp() -> str | None:
            chain = self.wait(self.runtime.chain_for(self.api))
            ctx = FakeContext(self.api)
            ctx.consumer = consumer
            pending = chain.access(ctx)
            if pending is not None:
                self.wait(_wait(pending))
            value: str | None = ctx.headers.get("X-Example")
            return value

        self.plugin("example-stamp", api_id=self.api["id"], config={"value": "api"})
        self.assertEqual(stamp(), "api")
        self.assertEqual(stamp(), "api")
        everywhere = self.plugin(
            "example-stamp", consumer_id=consumer["id"], config={"value": "consumer"}
        )
        self.assertEqual(stamp(), "consumer")
        here = self.plugin(
            "example-stamp",
            api_id=self.api["id"],
            consumer_id=consumer["id"],
            config={"value": "api+consumer"},
        )
        self.assertEqual(stamp(), "api+consumer")
        self.wait(self.dao.update("plugins", {"id": here["id"]}, {"config": {"value": "v2"}}))
        self.assertEqual(stamp(), "v2")
        self.wait(self.dao.update("plugins", {"id": here["id"]}, {"enabled": False}))
        self.assertEqual(stamp(), "consumer")
        self.wait(self.dao.delete("plugins", {"id": everywhere["id"]}))
        self.assertEqual(stamp(), "api")

    def test_rejected_requests_are_logged_by_later_plugins(self) -> None:
        """A request ssl rejects (426) is still seen by the lower-priority plugin's log phase."""
        cert_pem, key_pem, _, _ = self_signed_certificate("example.org")
        self.plugin(
            "ssl",
            api_id=self.api["id"],
            config={"cert": cert_pem, "key": key_pem, "only_https": True},
        )
        self.plugin("example-stamp", api_id=self.api["id"], config={"value": "v"})
        ctx = self.request(scheme="http")
        self.assertEqual(ctx.status, 426)
        self.assertIsNone(ctx.headers.get("X-Example"))  # its access never ran
        self.request(scheme="https", headers={"X-Example": "reject-me"})
        chain = self.wait(self.runtime.chain_for(self.api))
        self.assertEqual(chain.names(), ["ssl", "example-stamp"])
        stamp = chain.entries()[1].handler
        self.assertEqual(dict(stamp.statuses), {426: 1, 403: 1})
        self.assertIsNotNone(chain.certificate("example.org"))


class PrefetchTests(RuntimeTestCase):
    def test_a_new_api_costs_one_query_for_its_rows(self) -> None:
        """Compiling a new API's chain reads its plugin rows with one query, not one per
        loaded plugin (the global rows are cached from the first API's compile)."""
        self.add("limit", API["id"], tag="api")
        self.add("logger", tag="global")
        self.chain(API)
        self.rows.queries.clear()
        self.add("transform", OTHER_API["id"], tag="other")
        chain = self.chain(OTHER_API)
        # one query for every API-level row; the rest are global rows not cached yet
        # ("limit" had an API-level row on the first API, so its global was never read)
        self.assertEqual(
            self.rows.queries,
            [("plugins", {"api_id": OTHER_API["id"]}), ("plugins", {"name": "limit"})],
        )
        self.assertEqual(chain.names(), ["transform", "logger"])

    def test_an_invalidation_during_the_query_is_not_undone(self) -> None:
        """A row added while the prefetch query runs is not hidden by its stale answer."""
        pending: list[Deferred[list[dict[str, Any]]]] = []
        rows = self.rows

        class SlowRows:
            async def find_all(self, collection: str, filters: Any) -> list[dict[str, Any]]:
                if filters == {"api_id": API["id"]}:
                    d: Deferred[list[dict[str, Any]]] = Deferred()
                    pending.append(d)
                    return await d
                return await rows.find_all(collection, filters)

        runtime = PluginRuntime(SlowRows(), self.cache, self.registry, self.clock)
        compiling = defer.ensureDeferred(runtime.chain_for(API))
        self.assertEqual(len(pending), 1)
        row = self.add("limit", API["id"], tag="late")  # committed while the query runs
        invalidation.apply(self.cache, invalidation.keys_for("plugins", None, row))
        pending[0].callback([])  # the answer from before the insert
        self.successResultOf(compiling)
        # the stale "no row" was not stored: the compile looked again and found the row
        hit, cached = self.cache.peek(invalidation.plugin_key("limit", API["id"], None))
        self.assertTrue(hit)
        self.assertEqual(cached["id"], row["id"])
        chain = self.successResultOf(defer.ensureDeferred(self.runtime.chain_for(API)))
        self.assertIn("limit", chain.names())

    def test_a_failed_prefetch_fails_the_compile_and_caches_nothing(self) -> None:
        self.rows.fail = ConnectionError("datastore down")
        failure = self.failureResultOf(defer.ensureDeferred(self.runtime.chain_for(API)))
        failure.trap(ConnectionError)
        self.rows.fail = None
        self.assertFalse(self.cache.peek(invalidation.plugin_key("limit", API["id"], None))[0])
        self.chain(API)
