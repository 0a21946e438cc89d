"""Upstreams and targets (issue 9) in the IStore contract, on every backend of backends.py.

The store keeps the rows (JSON healthchecks, integer slots and weights), the
unique upstream name, the foreign key and the cascade from an upstream to its
targets; the DAO adds the (upstream_id, target) rule and Kong's validation on
top, the same way over every backend.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kongtx.clock import Clock
from kongtx.dao import DAO
from kongtx.errors import ConflictError
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.interface import ForeignKeyViolation, IStore, Row, UniqueViolation
from tests.reactor_thread import reactor, run
from tests.store.helpers import Rows

HEALTHCHECKS = {
    "active": {"type": "http", "timeout": 1.5, "healthy": {"http_statuses": [200, 302]}},
    "passive": {"unhealthy": {"tcp_failures": 3}},
}


def upstream(rows: Rows, name: str, **kw: Any) -> Row:
    row: Row = {
        "id": rows.id(),
        "created_at": rows.now(),
        "name": name,
        "algorithm": "round-robin",
        "hash_on": "none",
        "hash_fallback": "none",
        "hash_on_header": None,
        "hash_fallback_header": None,
        "slots": 10000,
        "healthchecks": HEALTHCHECKS,
        "tags": None,
    }
    row.update(kw)
    return row


def target(rows: Rows, upstream_id: str, name: str, weight: int = 100) -> Row:
    return {
        "id": rows.id(),
        "created_at": rows.now(),
        "upstream_id": upstream_id,
        "target": name,
        "weight": weight,
        "tags": None,
    }


def test_round_trip(store: IStore, rows: Rows) -> None:
    """Every column comes back as written: JSON healthchecks, integers, tags."""
    up = run(store.insert("upstreams", upstream(rows, "svc.test", tags=["a"])))
    got = run(store.get("upstreams", {"name": "svc.test"}))
    assert got == up
    assert got["healthchecks"] == HEALTHCHECKS and got["slots"] == 10000
    t = run(store.insert("targets", target(rows, up["id"], "10.0.0.1:8000", weight=0)))
    assert run(store.get("targets", {"id": t["id"]})) == t
    assert isinstance(t["weight"], int) and t["weight"] == 0


def test_unique_name_and_foreign_key(store: IStore, rows: Rows) -> None:
    """A taken name is a UniqueViolation; a target of no upstream a ForeignKeyViolation."""
    run(store.insert("upstreams", upstream(rows, "svc.test")))
    with pytest.raises(UniqueViolation) as unique:
        run(store.insert("upstreams", upstream(rows, "svc.test")))
    assert (unique.value.field, unique.value.value) == ("name", "svc.test")
    with pytest.raises(ForeignKeyViolation):
        run(store.insert("targets", target(rows, str(uuid.uuid4()), "a:8000")))
    assert run(store.count("targets", {})) == 0


def test_targets_filter_and_order(store: IStore, rows: Rows) -> None:
    """An upstream's targets list in creation order; (upstream_id, target) filters match one."""
    a = run(store.insert("upstreams", upstream(rows, "a.test")))
    b = run(store.insert("upstreams", upstream(rows, "b.test")))
    made = [run(store.insert("targets", target(rows, a["id"], f"h{i}:80"))) for i in range(3)]
    run(store.insert("targets", target(rows, b["id"], "h0:80")))
    listed = run(store.select("targets", {"upstream_id": a["id"]}))
    assert [t["id"] for t in listed] == [t["id"] for t in made]
    one = run(store.select("targets", {"upstream_id": b["id"], "target": "h0:80"}))
    assert [t["upstream_id"] for t in one] == [b["id"]]
    page = run(store.page("targets", {"upstream_id": a["id"]}, 2, None))
    assert (len(page.rows), page.total, page.offset is not None) == (2, 3, True)


def test_delete_upstream_cascades_to_targets(store: IStore, rows: Rows) -> None:
    """Deleting an upstream deletes its targets (returned, with events), not another's."""
    a = run(store.insert("upstreams", upstream(rows, "a.test")))
    b = run(store.insert("upstreams", upstream(rows, "b.test")))
    mine = [run(store.insert("targets", target(rows, a["id"], f"h{i}:80"))) for i in range(2)]
    theirs = run(store.insert("targets", target(rows, b["id"], "h0:80")))
    deleted = run(store.delete("upstreams", {"id": a["id"]}))
    assert deleted[0] == ("upstreams", a)
    assert sorted(r["id"] for t, r in deleted[1:] if t == "targets") == sorted(
        t["id"] for t in mine
    )
    assert run(store.select("targets", {})) == [theirs]
    events = run(store.events_after(store.origin, 0, 100))
    deletes = [(e.collection, e.old["id"]) for e in events if e.type == "delete" and e.old]
    assert ("upstreams", a["id"]) in deletes
    assert {("targets", t["id"]) for t in mine} <= set(deletes)


def test_dao_rules_on_every_backend(store: IStore) -> None:
    """Through the DAO: defaults, normalised targets, the (upstream, target) 409, cascade."""
    dao = DAO(store, PluginRegistry.load([]), Clock(reactor()))
    up = run(dao.insert("upstreams", {"name": "svc.test", "hash_on": "ip"}))
    assert up["algorithm"] == "consistent-hashing"
    assert up["healthchecks"]["active"]["unhealthy"]["http_statuses"][0] == 429
    t = run(dao.insert("targets", {"upstream_id": up["id"], "target": "Host.Test"}))
    assert (t["target"], t["weight"]) == ("host.test:8000", 100)
    with pytest.raises(ConflictError) as conflict:
        run(dao.insert("targets", {"upstream_id": up["id"], "target": "host.test:8000"}))
    assert (conflict.value.field, conflict.value.value) == ("target", "host.test:8000")
    other = run(dao.insert("upstreams", {"name": "other.test"}))
    run(dao.insert("targets", {"upstream_id": other["id"], "target": "host.test"}))
    patched = run(
        dao.update("upstreams", {"id": up["id"]}, {"healthchecks": {"active": {"timeout": 3}}})
    )
    assert patched is not None
    assert patched["healthchecks"]["active"]["timeout"] == 3
    assert patched["healthchecks"]["active"]["concurrency"] == 10
    assert run(dao.delete("upstreams", {"id": up["id"]}))
    assert run(dao.count("targets", {"upstream_id": up["id"]})) == 0
    assert run(dao.count("targets", {})) == 1
