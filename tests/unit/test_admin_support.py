"""An in-memory Admin API for tests: MemoryStore + DAO + Cache + a fake node, via StubTreq.

Other ``test_admin_*`` modules import :class:`AdminHarness` from here; the few
tests below hold the harness itself to what those modules rely on.
"""

from __future__ import annotations

import json
from typing import Any

from treq import content as treq_content
from treq.testing import StubTreq
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.admin.resource import AdminResource, NodeInfo
from kongtx.admin.routes.crud import render
from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.config_loading import load_config
from kongtx.dao import DAO
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

BASE = "http://localhost:8001"


class FakeNode:
    """A NodeInfo whose cluster is a list the test controls."""

    name = "node-a"
    hostname = "host-a"

    def __init__(self) -> None:
        self.member_list: list[dict[str, Any]] = [
            {"name": "node-a", "address": "10.0.0.1:7946", "status": "alive"},
            {"name": "node-b", "address": "10.0.0.2:7946", "status": "failed"},
        ]
        self.joined: list[str] = []
        self.left: list[str] = []
        self.error: str | None = None

    async def members(self) -> list[dict[str, Any]]:
        return list(self.member_list)

    def server_stats(self) -> dict[str, int]:
        return {
            "connections_active": 1,
            "connections_reading": 0,
            "connections_writing": 1,
            "connections_waiting": 0,
            "connections_accepted": 7,
            "connections_handled": 7,
            "total_requests": 9,
        }

    async def join(self, address: str) -> None:
        if self.error is not None:
            raise ValueError(self.error)
        self.joined.append(address)

    async def force_leave(self, name: str) -> None:
        if self.error is not None:
            raise ValueError(self.error)
        self.left.append(name)


class Response:
    """Status, headers (lower-cased names, last value) and body of one reply."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


class AdminHarness:
    """One node's Admin API in memory, with helpers to call it and to seed the store."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.testcase = testcase
        self.reactor = task.Clock()
        self.reactor.advance(1_480_000_000)
        self.clock = Clock(self.reactor)
        self.registry = PluginRegistry.load([])
        self.store = MemoryStore(TABLES, "node-a", self.clock)
        self.dao = DAO(self.store, self.registry, self.clock)
        self.cache = Cache(self.clock)
        self.config = load_config(None, env={})
        self.node = FakeNode()
        node: NodeInfo = self.node
        self.resource = AdminResource(
            self.dao, self.cache, self.config, self.registry, node, self.clock
        )
        self.treq = StubTreq(self.resource)

    # ----------------------------------------------------------------- calling

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request through real HTTP parsing and return the whole reply."""
        kw: dict[str, Any] = {}
        if json_body is not None:
            kw["data"] = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif form is not None:
            kw["data"] = form
        elif data is not None:
            kw["data"] = data
        if headers:
            kw["headers"] = {k: [v] for k, v in headers.items()}
        d = self.treq.request(method, BASE + path, **kw)
        self.treq.flush()
        response = self.testcase.successResultOf(d)
        body_d = treq_content(response)
        self.treq.flush()
        body = self.testcase.successResultOf(body_d)
        header_map = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        return Response(response.code, header_map, body)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Call and assert the status; the decoded JSON body (None when empty)."""
        response = self.call(method, path, **kw)
        self.testcase.assertEqual(response.status, status, response)
        return response.json if response.body else None

    # ----------------------------------------------------------------- seeding

    def run(self, coro: Any) -> Any:
        """Run a DAO/store coroutine to completion (the memory store never waits)."""
        d: Deferred[Any] = ensureDeferred(coro)
        return self.testcase.successResultOf(d)

    def insert(self, collection: str, values: dict[str, Any]) -> dict[str, Any]:
        """Insert through the DAO; the row as the Admin API renders it."""
        rendered: dict[str, Any] = render(self.run(self.dao.insert(collection, values)))
        return rendered

    def api(self, name: str = "example", **fields: Any) -> dict[str, Any]:
        values = {"name": name, "request_host": f"{name}.com", "upstream_url": "http://up.test"}
        values.update(fields)
        return self.insert("apis", values)

    def consumer(self, username: str = "bob", **fields: Any) -> dict[str, Any]:
        return self.insert("consumers", {"username": username, **fields})

    def plugin(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.insert("plugins", {"name": name, **fields})

    def snapshot(self) -> dict[str, Any]:
        """Every row of every table plus the change log: what a rejected request must not touch."""
        tables = {
            name: sorted(
                (json.dumps(r, sort_keys=True) for r in self.run(self.store.select(name, {}))),
            )
            for name in TABLES
        }
        events = self.run(self.store.events_since(0, 1_000_000))
        return {"tables": tables, "events": len(events)}


class HarnessTests(SynchronousTestCase):
    def test_fake_node_is_a_nodeinfo(self) -> None:
        """The fake node offers every NodeInfo member the Admin API uses."""
        node = FakeNode()
        for name in ("name", "hostname", "members", "server_stats", "join", "force_leave"):
            self.assertTrue(hasattr(node, name), name)

    def test_round_trip(self) -> None:
        """A seeded API is visible through the harness's HTTP call."""
        admin = AdminHarness(self)
        api = admin.api("seeded")
        self.assertEqual(admin.ok("GET", "/apis/seeded")["id"], api["id"])

    def test_snapshot_sees_writes(self) -> None:
        """The snapshot changes when a row is written, so it can prove nothing was."""
        admin = AdminHarness(self)
        before = admin.snapshot()
        admin.consumer("alice")
        self.assertNotEqual(before, admin.snapshot())
