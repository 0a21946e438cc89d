"""key-auth at request time (SPEC §4.2), and the shared auth machinery (anonymous, caching).

:class:`AuthWorld` (a real DAO over the in-memory store, the node cache and the
invalidation listener, on a fake clock) is reused by the other auth plugins' tests.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx import invalidation
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.dao import DAO
from kongtx.plugins.auth_common import check_anonymous
from kongtx.plugins.base import BasePlugin, PluginServices
from kongtx.plugins.key_auth import handler as handler_module
from kongtx.plugins.key_auth.handler import Handler
from kongtx.plugins.registry import PluginRegistry
from kongtx.proxy.headers import HeaderList
from kongtx.store.memory import MemoryStore
from kongtx.store.schemas import validate
from kongtx.store.tables import TABLES
from tests.fakes import FakeContext

T = TypeVar("T")
REGISTRY = PluginRegistry.load()
NOW = 1_480_000_000


class CountingDAO:
    """The DAO, counting reads (to prove what the cache spares)."""

    def __init__(self, dao: DAO) -> None:
        self.dao = dao
        self.reads: list[tuple[str, dict[str, Any]]] = []

    async def find(self, collection: str, key: Mapping[str, Any]) -> Any:
        self.reads.append((collection, dict(key)))
        return await self.dao.find(collection, key)

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> Any:
        self.reads.append((collection, dict(filters)))
        return await self.dao.find_all(collection, filters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dao, name)


class AuthWorld:
    """A node's data side in memory: DAO, cache kept fresh by invalidation, clock."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case
        self.reactor = task.Clock()
        self.reactor.advance(NOW)
        self.clock = Clock(self.reactor)
        self.store = MemoryStore(TABLES, "node-a", self.clock)

        async def inline(fn: Callable[[], T]) -> T:
            return fn()

        self.dao = DAO(self.store, REGISTRY, self.clock, inline)
        self.cache = Cache(self.clock)
        self.dao.add_listener(invalidation.listener(self.cache))
        self.counting = CountingDAO(self.dao)
        self.services = PluginServices(
            dao=self.counting, cache=self.cache, clock=self.clock, reactor=self.reactor
        )

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.case.successResultOf(Deferred.fromCoroutine(coro))

    def insert(self, collection: str, **values: Any) -> dict[str, Any]:
        return self.wait(self.dao.insert(collection, values))

    def consumer(self, username: str = "bob", **values: Any) -> dict[str, Any]:
        return self.insert("consumers", username=username, **values)

    def config(self, plugin: str, **config: Any) -> dict[str, Any]:
        """``config`` validated with SPEC's defaults, as the plugin row would hold it."""
        spec = REGISTRY.get(plugin)
        assert spec is not None
        return validate(spec.config_schema, config, "insert")

    def run(self, handler: BasePlugin, ctx: FakeContext) -> FakeContext:
        """Run the access phase to completion (it may or may not wait)."""
        result = handler.access(ctx)
        if result is not None:
            self.case.successResultOf(ensureDeferred(result))  # type: ignore[arg-type]
        return ctx


def kong_response(ctx: FakeContext) -> tuple[int, Any, dict[str, str]] | None:
    return None if ctx.response is None else (ctx.response[0], ctx.response[1], ctx.response[2])


class KeyAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob", custom_id="b-1")
        self.cred = self.world.insert("keyauth_credentials", consumer_id=self.bob["id"], key="k1")

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("key-auth", **config), self.world.services)

    def test_missing_key(self) -> None:
        """No key anywhere: 401, SPEC's message and WWW-Authenticate: Key realm="kong"."""
        ctx = self.world.run(self.handler(), FakeContext())
        self.assertEqual(
            kong_response(ctx),
            (
                401,
                {"message": "No API key found in headers or querystring"},
                {"WWW-Authenticate": 'Key realm="kong"'},
            ),
        )

    def test_key_in_header(self) -> None:
        """A valid key in the header authenticates and sets the consumer headers."""
        ctx = self.world.run(self.handler(), FakeContext(headers={"apikey": "k1"}))
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Consumer-ID"), self.bob["id"])
        self.assertEqual(ctx.headers.get("X-Consumer-Custom-ID"), "b-1")
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")
        self.assertEqual(ctx.consumer, self.bob)
        self.assertEqual(ctx.credential, self.cred)
        self.assertEqual(ctx.headers.get("apikey"), "k1")

    def test_key_in_query(self) -> None:
        """A valid key in the query string authenticates too."""
        ctx = self.world.run(self.handler(), FakeContext(query=[("apikey", "k1")]))
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.consumer, self.bob)

    def test_invalid_key(self) -> None:
        """An unknown key: 403 Invalid authentication credentials."""
        ctx = self.world.run(self.handler(), FakeContext(headers={"apikey": "nope"}))
        self.assertEqual(
            kong_response(ctx), (403, {"message": "Invalid authentication credentials"}, {})
        )

    def test_duplicate_key(self) -> None:
        """A key given twice under one name: 401 Duplicate API key found (header or query)."""
        for ctx in (
            FakeContext(headers=[("apikey", "k1"), ("apikey", "k1")]),
            FakeContext(query=[("apikey", "k1"), ("apikey", "k2")]),
        ):
            self.world.run(self.handler(), ctx)
            self.assertEqual(kong_response(ctx), (401, {"message": "Duplicate API key found"}, {}))

    def test_key_names_in_order(self) -> None:
        """Names are tried in order, header then query for each; bare query flags are skipped."""
        h = self.handler(key_names=["first", "second"])
        ctx = self.world.run(h, FakeContext(query=[("first", None), ("second", "k1")]))
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.consumer, self.bob)

    def test_hide_credentials(self) -> None:
        """hide_credentials removes the key's header and query argument."""
        h = self.handler(hide_credentials=True)
        ctx = self.world.run(
            h, FakeContext(headers={"apikey": "k1"}, query=[("apikey", "x"), ("a", "1")])
        )
        self.assertIsNone(ctx.response)
        self.assertIsNone(ctx.headers.get("apikey"))
        self.assertEqual(ctx.query, [("a", "1")])

    def test_spoofed_identity_headers_replaced(self) -> None:
        """A client's own X-Consumer-* headers never reach the upstream."""
        anon = self.world.insert(
            "keyauth_credentials",
            consumer_id=self.world.consumer("nocustom")["id"],
            key="k2",
        )
        ctx = FakeContext(headers={"apikey": "k2", "X-Consumer-Custom-ID": "admin"})
        self.world.run(self.handler(), ctx)
        self.assertEqual(ctx.credential, anon)
        self.assertIsNone(ctx.headers.get("X-Consumer-Custom-ID"))
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "nocustom")

    def test_spoofed_plugin_headers_removed(self) -> None:
        """Headers only auth plugins set (X-Credential-Username, X-Authenticated-*) are dropped."""
        ctx = FakeContext(
            headers={
                "apikey": "k1",
                "X-Credential-Username": "admin",
                "X-Authenticated-Userid": "admin",
                "X-Authenticated-Scope": "all",
                "X-Consumer-Groups": "admins",
            }
        )
        self.world.run(self.handler(), ctx)
        self.assertIsNone(ctx.response)
        for name in (
            "X-Credential-Username",
            "X-Authenticated-Userid",
            "X-Authenticated-Scope",
            "X-Consumer-Groups",
        ):
            self.assertIsNone(ctx.headers.get(name), name)

    def test_second_plugin_keeps_first_plugins_headers(self) -> None:
        """With two auth plugins (AND), the second keeps what the first set (X-Credential-Username)."""
        ctx = FakeContext(headers={"apikey": "k1", "X-Credential-Username": "from-basic-auth"})
        ctx.consumer, ctx.credential = self.bob, {"id": "c", "consumer_id": self.bob["id"]}
        self.world.run(self.handler(), ctx)
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.headers.get("X-Credential-Username"), "from-basic-auth")

    def test_consumer_headers_worked_out_once_per_row(self) -> None:
        """The consumer's headers are kept per consumer row: every request gets them (and loses
        what it spoofed), a later plugin keeps an earlier one's, a changed row is worked out anew."""
        h = self.handler()
        for _ in range(3):
            ctx = FakeContext()
            # the proxy's headers (one-pass removal): what the kept headers serve
            ctx.headers = HeaderList(
                [("apikey", "k1"), ("X-Consumer-Custom-ID", "x"), ("X-Credential-Username", "y")]
            )
            self.world.run(h, ctx)
            self.assertEqual(
                sorted((k.lower(), v) for k, v in ctx.headers.items()),
                [
                    ("apikey", "k1"),
                    ("x-consumer-custom-id", "b-1"),
                    ("x-consumer-id", self.bob["id"]),
                    ("x-consumer-username", "bob"),
                ],
            )
        self.assertEqual(list(h._consumers), [self.bob["id"]])
        ctx = FakeContext()
        ctx.headers = HeaderList([("apikey", "k1"), ("X-Credential-Username", "from-basic-auth")])
        ctx.consumer, ctx.credential = self.bob, {"id": "c", "consumer_id": self.bob["id"]}
        self.world.run(h, ctx)
        self.assertEqual(ctx.headers.get("X-Credential-Username"), "from-basic-auth")
        self.world.wait(
            self.world.dao.update("consumers", {"id": self.bob["id"]}, {"custom_id": None})
        )
        ctx = FakeContext()
        ctx.headers = HeaderList([("apikey", "k1"), ("X-Consumer-Custom-ID", "x")])
        self.world.run(h, ctx)
        self.assertIsNone(ctx.headers.get("X-Consumer-Custom-ID"))
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")

    def test_cached_lookups_are_synchronous(self) -> None:
        """Once credential and consumer are cached, access runs without waiting or reading."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        reads = len(self.world.counting.reads)
        ctx = FakeContext(headers={"apikey": "k1"})
        self.assertIsNone(h.access(ctx))
        self.assertEqual(ctx.consumer, self.bob)
        self.assertEqual(len(self.world.counting.reads), reads)
        self.assertIn("keyauth_credentials:k1", self.world.cache)
        self.assertIn(f"consumers:{self.bob['id']}", self.world.cache)

    def test_cached_consumer_shares_the_credentials_id_string(self) -> None:
        """One string per consumer in the cache: its row's id is the credential's consumer_id."""
        self.world.run(self.handler(), FakeContext(headers={"apikey": "k1"}))
        _, credential = self.world.cache.peek("keyauth_credentials:k1")
        _, consumer = self.world.cache.peek(f"consumers:{self.bob['id']}")
        self.assertEqual(consumer, self.bob)
        self.assertIs(consumer["id"], credential["consumer_id"])

    def test_unknown_key_is_cached_until_created(self) -> None:
        """A miss is cached, and creating that key makes it work on the next request."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"apikey": "later"}))
        reads = len(self.world.counting.reads)
        ctx = self.world.run(h, FakeContext(headers={"apikey": "later"}))
        self.assertEqual(len(self.world.counting.reads), reads)
        self.assertEqual(
            kong_response(ctx), (403, {"message": "Invalid authentication credentials"}, {})
        )
        self.world.insert("keyauth_credentials", consumer_id=self.bob["id"], key="later")
        ctx = self.world.run(h, FakeContext(headers={"apikey": "later"}))
        self.assertIsNone(ctx.response)

    def test_deleted_credential_stops_working(self) -> None:
        """Deleting a cached credential refuses the very next request."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        self.world.wait(self.world.dao.delete("keyauth_credentials", {"id": self.cred["id"]}))
        ctx = self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        self.assertEqual(ctx.response and ctx.response[0], 403)

    def test_changed_key_and_consumer(self) -> None:
        """A changed key stops the old one at once; a renamed consumer shows its new name."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        self.world.wait(
            self.world.dao.update("keyauth_credentials", {"id": self.cred["id"]}, {"key": "k9"})
        )
        self.world.wait(
            self.world.dao.update("consumers", {"id": self.bob["id"]}, {"username": "robert"})
        )
        self.assertEqual(self.world.run(h, FakeContext(headers={"apikey": "k1"})).status, 403)
        ctx = self.world.run(h, FakeContext(headers={"apikey": "k9"}))
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "robert")

    def test_credential_moved_to_another_consumer(self) -> None:
        """What a key remembers (its consumer's cache key and headers) follows the
        credential row: moved to another consumer, the next request is that consumer's;
        the handler's cache of keys stays bounded."""
        h = self.handler()
        self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        alice = self.world.consumer("alice")
        self.world.wait(
            self.world.dao.update(
                "keyauth_credentials", {"id": self.cred["id"]}, {"consumer_id": alice["id"]}
            )
        )
        ctx = self.world.run(h, FakeContext(headers={"apikey": "k1"}))
        self.assertEqual(ctx.consumer, alice)
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "alice")
        self.assertIsNone(ctx.headers.get("X-Consumer-Custom-ID"))
        ctx = self.world.run(h, FakeContext(headers={"apikey": "k1"}))  # cached: kept
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "alice")
        self.assertEqual(list(h._keys), ["k1"])
        # back to bob: the kept entry meets a new credential row and follows it
        self.world.wait(
            self.world.dao.update(
                "keyauth_credentials", {"id": self.cred["id"]}, {"consumer_id": self.bob["id"]}
            )
        )
        for _ in range(2):  # the first reloads the credential, the second is all cached
            ctx = self.world.run(h, FakeContext(headers={"apikey": "k1"}))
            self.assertEqual(ctx.headers.get("X-Consumer-Username"), "bob")
            self.assertEqual(ctx.headers.get("X-Consumer-Custom-ID"), "b-1")
        for i in range(5):
            self.world.run(h, FakeContext(headers={"apikey": f"unknown-{i}"}))
        self.assertEqual(list(h._keys), ["k1"])  # keys naming no credential: not kept
        self.patch(handler_module, "MAX_KEYS", 3)
        for i in range(5):
            self.world.insert("keyauth_credentials", consumer_id=alice["id"], key=f"a{i}")
            self.world.run(h, FakeContext(headers={"apikey": f"a{i}"}))
            self.world.run(h, FakeContext(headers={"apikey": f"a{i}"}))
            self.assertLessEqual(len(h._keys), 3)


class AnonymousTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = AuthWorld(self)
        self.bob = self.world.consumer("bob")
        self.guest = self.world.consumer("guest")
        self.world.insert("keyauth_credentials", consumer_id=self.bob["id"], key="k1")

    def handler(self, **config: Any) -> Handler:
        return Handler(self.world.config("key-auth", **config), self.world.services)

    def test_anonymous_fallback(self) -> None:
        """With anonymous set, a request without a key goes on as that consumer, flagged."""
        h = self.handler(anonymous=self.guest["id"])
        ctx = self.world.run(h, FakeContext(headers={"X-Anonymous-Consumer": "false"}))
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.consumer, self.guest)
        self.assertIsNone(ctx.credential)
        self.assertEqual(ctx.headers.get("X-Consumer-Username"), "guest")
        self.assertEqual(ctx.headers.get("X-Anonymous-Consumer"), "true")

    def test_real_credential_clears_anonymous_flag(self) -> None:
        """An authenticated request never carries X-Anonymous-Consumer (even a client's own)."""
        h = self.handler(anonymous=self.guest["id"])
        ctx = self.world.run(
            h, FakeContext(headers={"apikey": "k1", "X-Anonymous-Consumer": "true"})
        )
        self.assertEqual(ctx.consumer, self.bob)
        self.assertIsNone(ctx.headers.get("X-Anonymous-Consumer"))

    def test_already_authenticated_is_left_alone(self) -> None:
        """Logical OR: with anonymous set, a request an earlier plugin authenticated is not re-checked."""
        h = self.handler(anonymous=self.guest["id"])
        ctx = FakeContext()
        ctx.consumer, ctx.credential = self.bob, {"id": "c", "consumer_id": self.bob["id"]}
        self.assertIsNone(h.access(ctx))
        self.assertIsNone(ctx.response)
        self.assertEqual(ctx.consumer, self.bob)

    def test_without_anonymous_already_authenticated_is_checked(self) -> None:
        """Without anonymous, each auth plugin still demands its own credential (AND)."""
        ctx = FakeContext()
        ctx.consumer, ctx.credential = self.bob, {"id": "c", "consumer_id": self.bob["id"]}
        self.world.run(self.handler(), ctx)
        self.assertEqual(ctx.response and ctx.response[0], 401)

    def test_missing_anonymous_consumer(self) -> None:
        """An anonymous id naming no consumer: 500 with Kong's fixed message."""
        h = self.handler(anonymous="00000000-0000-4000-8000-000000000000")
        ctx = self.world.run(h, FakeContext())
        self.assertEqual(kong_response(ctx), (500, {"message": "An unexpected error occurred"}, {}))

    def test_anonymous_must_be_a_uuid(self) -> None:
        """The anonymous option is empty or a consumer id (Kong 0.10's check)."""
        self.assertEqual(
            check_anonymous("bob", {}), "the anonymous user must be empty or a valid uuid"
        )
        self.assertIsNone(check_anonymous("", {}))
        self.assertIsNone(check_anonymous(self.guest["id"], {}))
