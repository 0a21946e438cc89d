"""Declarative ``upstreams:`` with nested ``targets:`` (issue 9): load, ids, errors, round trip."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx import declarative
from kongtx.clock import Clock
from kongtx.dao import DAO
from kongtx.declarative import DeclarativeError
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES

T = TypeVar("T")
REGISTRY = PluginRegistry.load([])

DOCUMENT: dict[str, Any] = {
    "_format_version": "1.1",
    "apis": [{"name": "a", "request_host": "a.test", "upstream_url": "http://backend.internal"}],
    "upstreams": [
        {
            "name": "backend.internal",
            "tags": ["prod"],
            "healthchecks": {"active": {"healthy": {"interval": 5}}},
            "targets": [
                {"target": "10.0.0.2:8080", "weight": 50},
                {"target": "Node1.internal"},
            ],
        },
        {"name": "hashed.internal", "hash_on": "header", "hash_on_header": "X-User"},
    ],
}


class UpstreamDocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1_480_000_000)
        self.clock = Clock(self.reactor)
        self.dao = DAO(MemoryStore(TABLES, "node-a", self.clock), REGISTRY, self.clock)

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def loaded(self, document: dict[str, Any]) -> DAO:
        store, _ = self.wait(declarative.validate_document(document, self.dao))
        return DAO(store, REGISTRY, self.clock)

    def errors(self, document: dict[str, Any]) -> list[str]:
        coro = declarative.validate_document(document, self.dao)
        failure = self.failureResultOf(Deferred.fromCoroutine(coro), DeclarativeError)
        errors: list[str] = failure.value.errors
        return errors

    def test_load_with_defaults_and_nested_targets(self) -> None:
        """Upstreams get their defaults (healthchecks deep-merged); targets their upstream."""
        dao = self.loaded(DOCUMENT)
        up = self.wait(dao.find("upstreams", {"name": "backend.internal"}))
        assert up is not None
        self.assertEqual(up["healthchecks"]["active"]["healthy"]["interval"], 5)
        self.assertEqual(up["healthchecks"]["active"]["healthy"]["http_statuses"], [200, 302])
        targets = self.wait(dao.find_all("targets", {"upstream_id": up["id"]}))
        self.assertEqual(
            sorted((t["target"], t["weight"]) for t in targets),
            [("10.0.0.2:8080", 50), ("node1.internal:8000", 100)],
        )
        hashed = self.wait(dao.find("upstreams", {"name": "hashed.internal"}))
        assert hashed is not None
        self.assertEqual(hashed["algorithm"], "consistent-hashing")

    def test_ids_are_deterministic(self) -> None:
        """Loading twice gives the same upstream and target ids."""
        first = self.wait(declarative.export_document(self.loaded(DOCUMENT)))
        second = self.wait(declarative.export_document(self.loaded(DOCUMENT)))
        self.assertEqual(first, second)

    def test_round_trip(self) -> None:
        """export -> load -> export is stable; targets nest without upstream_id, sorted."""
        exported = self.wait(declarative.export_document(self.loaded(DOCUMENT)))
        again = self.wait(
            declarative.export_document(self.loaded(declarative.parse(declarative.dump(exported))))
        )
        self.assertEqual(again, exported)
        self.assertEqual(
            [u["name"] for u in exported["upstreams"]], ["backend.internal", "hashed.internal"]
        )
        targets = exported["upstreams"][0]["targets"]
        self.assertEqual([t["target"] for t in targets], ["10.0.0.2:8080", "node1.internal:8000"])
        self.assertNotIn("upstream_id", targets[0])
        self.assertNotIn("targets", exported["upstreams"][1])

    def test_errors_name_paths(self) -> None:
        """Bad upstreams and targets are named by their path; duplicates conflict."""
        document = {
            "_format_version": "1.1",
            "upstreams": [
                {"name": "bad name", "targets": [{"target": "never.checked"}]},
                {
                    "name": "ok.internal",
                    "targets": [
                        {"target": "a.internal"},
                        {"target": "a.internal:8000"},
                        {"target": "x:0", "weight": -1},
                    ],
                },
            ],
        }
        self.assertEqual(
            self.errors(document),
            [
                "upstreams[0].name: Invalid name; must be a valid hostname",
                "upstreams[1].targets[1].target: already exists with value 'a.internal:8000'",
                "upstreams[1].targets[2].target: Invalid target; not a valid hostname or ip address",
                "upstreams[1].targets[2].weight: value should be between 0 and 1000",
            ],
        )
        self.assertEqual(
            self.errors({"_format_version": "1.1", "upstreams": {"name": "x"}}),
            ["upstreams: must be a list"],
        )

    def test_import_replaces_in_place(self) -> None:
        """db_import twice into a store keeps ids and writes each row once more, not twice."""
        self.wait(declarative.import_document(DOCUMENT, self.dao))
        first = self.wait(declarative.export_document(self.dao))
        self.wait(declarative.import_document(DOCUMENT, self.dao))
        self.assertEqual(self.wait(declarative.export_document(self.dao)), first)
        self.assertEqual(self.wait(self.dao.count("targets", {})), 2)
