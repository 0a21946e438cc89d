"""The IStore contract, run on every backend listed in tests/store/backends.py.

A test here states behaviour the DAO, the Admin API and the cluster rely on;
each backend must pass it unchanged (STYLE.md rule 15).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred, gatherResults
from zope.interface.verify import verifyObject

from kongtx.store.interface import (
    ForeignKeyViolation,
    InvalidOffset,
    IStore,
    Page,
    UniqueViolation,
)
from kongtx.store.tables import TABLES
from tests.reactor_thread import run
from tests.store.backends import Harness
from tests.store.helpers import Rows, StoreSet

# --------------------------------------------------------------------------- basics


def test_provides_istore(store: IStore) -> None:
    """Every backend provides IStore and names itself and its tables."""
    assert verifyObject(IStore, store)
    assert store.name in {"memory", "sqlite", "postgres", "cassandra"}
    assert set(store.tables) == set(TABLES)
    assert store.origin == "node-a"


def test_insert_returns_every_column(store: IStore, rows: Rows) -> None:
    """insert returns the stored row with every column of its table, missing ones as None."""
    api = rows.api()
    del api["request_path"]
    stored = run(store.insert("apis", api))
    assert stored == {**api, "request_path": None}
    assert set(stored) == set(TABLES["apis"].column_names)


def test_get_by_primary_key_and_by_unique_column(store: IStore, rows: Rows) -> None:
    """get finds a row by its primary key or by any one unique column, else returns None."""
    api = run(store.insert("apis", rows.api()))
    assert run(store.get("apis", {"id": api["id"]})) == api
    assert run(store.get("apis", {"name": api["name"]})) == api
    assert run(store.get("apis", {"request_host": api["request_host"]})) == api
    assert run(store.get("apis", {"id": rows.id()})) is None
    assert run(store.get("apis", {"name": "nope"})) is None


def test_types_round_trip(store: IStore, rows: Rows) -> None:
    """JSON columns come back as dict/list, booleans as bool, created_at as the same int."""
    consumer = run(store.insert("consumers", rows.consumer()))
    config = {"second": 5, "nested": {"a": [1, 2.5, "x", None, True]}, "empty": {}}
    plugin = run(store.insert("plugins", rows.plugin(config=config, enabled=False)))
    app = run(store.insert("oauth2_credentials", rows.oauth2_app(consumer["id"])))
    got = run(store.get("plugins", {"id": plugin["id"]}))
    assert got is not None
    assert got["config"] == config
    assert got["enabled"] is False
    assert isinstance(got["created_at"], int) and got["created_at"] == plugin["created_at"]
    got_app = run(store.get("oauth2_credentials", {"id": app["id"]}))
    assert got_app is not None and got_app["redirect_uri"] == ["https://app.example.com/cb"]
    api = run(store.insert("apis", rows.api(strip_request_path=True)))
    assert run(store.get("apis", {"id": api["id"]}))["strip_request_path"] is True  # type: ignore[index]


def test_returned_rows_are_copies(store: IStore, rows: Rows) -> None:
    """Mutating a returned row (or its JSON value) does not change what the store holds."""
    plugin = run(store.insert("plugins", rows.plugin()))
    plugin["config"]["key_names"].append("mutated")
    plugin["name"] = "mutated"
    got = run(store.get("plugins", {"id": plugin["id"]}))
    assert got is not None
    assert got["name"] == "key-auth"
    assert got["config"]["key_names"] == ["apikey"]


def test_unknown_table_or_column_raises_key_error(store: IStore, rows: Rows) -> None:
    """An unknown table or column name raises KeyError, never reaches a query."""
    with pytest.raises(KeyError):
        run(store.select("nope", {}))
    with pytest.raises(KeyError):
        run(store.select("apis", {"nope": 1}))
    with pytest.raises(KeyError):
        run(store.insert("apis", {**rows.api(), "nope": 1}))


# --------------------------------------------------------------------------- uniqueness


def test_duplicate_primary_key(store: IStore, rows: Rows) -> None:
    """A second row with the same primary key is a UniqueViolation on that key."""
    api = run(store.insert("apis", rows.api()))
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("apis", rows.api(id=api["id"])))
    assert e.value.field == "id" and e.value.value == api["id"]


@pytest.mark.parametrize("column", ["name", "request_host", "request_path"])
def test_api_unique_columns(store: IStore, rows: Rows, column: str) -> None:
    """apis name, request_host and request_path are each unique, with Kong's message."""
    first = run(store.insert("apis", rows.api(**{"request_path": "/taken", column: "taken"})))
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("apis", rows.api(**{"request_path": "/other", column: first[column]})))
    assert e.value.field == column
    assert e.value.value == first[column]
    assert str(e.value) == f"{column} already exists with value '{first[column]}'"
    assert run(store.count("apis", {})) == 1


def test_consumer_username_and_custom_id_unique(store: IStore, rows: Rows) -> None:
    """consumers username AND custom_id are unique (SPEC's Postgres custom_id gap closed)."""
    run(store.insert("consumers", rows.consumer(username="bob", custom_id="c-1")))
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("consumers", rows.consumer(username="bob")))
    assert (e.value.field, e.value.value) == ("username", "bob")
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("consumers", rows.consumer(custom_id="c-1")))
    assert (e.value.field, e.value.value) == ("custom_id", "c-1")


def test_null_is_not_a_duplicate(store: IStore, rows: Rows) -> None:
    """Several rows may leave a unique column NULL."""
    run(store.insert("consumers", rows.consumer(custom_id=None)))
    run(store.insert("consumers", rows.consumer(custom_id=None)))
    assert run(store.count("consumers", {"custom_id": None})) == 2


def test_credential_unique_columns(store: IStore, rows: Rows) -> None:
    """Credential natural keys are unique: key-auth key, oauth2 client_id and client_secret."""
    consumer = run(store.insert("consumers", rows.consumer()))
    cred = run(store.insert("keyauth_credentials", rows.keyauth(consumer["id"], key="k1")))
    with pytest.raises(UniqueViolation) as e:
        run(store.insert("keyauth_credentials", rows.keyauth(consumer["id"], key=cred["key"])))
    assert (e.value.field, e.value.value) == ("key", "k1")
    app = run(store.insert("oauth2_credentials", rows.oauth2_app(consumer["id"])))
    for column in ("client_id", "client_secret"):
        with pytest.raises(UniqueViolation) as e:
            run(
                store.insert(
                    "oauth2_credentials", rows.oauth2_app(consumer["id"], **{column: app[column]})
                )
            )
        assert e.value.field == column


# --------------------------------------------------------------------------- foreign keys


def test_foreign_key_violation(store: IStore, rows: Rows) -> None:
    """A row naming a missing parent is a ForeignKeyViolation on that column; nothing is written."""
    missing = rows.id()
    with pytest.raises(ForeignKeyViolation) as e:
        run(store.insert("plugins", rows.plugin(api_id=missing)))
    assert (e.value.field, e.value.value) == ("api_id", missing)
    assert str(e.value) == f"api_id does not exist with value '{missing}'"
    with pytest.raises(ForeignKeyViolation) as e:
        run(store.insert("keyauth_credentials", rows.keyauth(missing)))
    assert e.value.field == "consumer_id"
    assert run(store.count("plugins", {})) == 0
    assert run(store.count("keyauth_credentials", {})) == 0


def test_cascade_delete_returns_every_deleted_row(store: IStore, rows: Rows) -> None:
    """Deleting a consumer deletes (and returns, named row first) its plugins, credentials and their tokens."""
    consumer = run(store.insert("consumers", rows.consumer()))
    other = run(store.insert("consumers", rows.consumer()))
    api = run(store.insert("apis", rows.api()))
    plugin = run(store.insert("plugins", rows.plugin(api_id=api["id"], consumer_id=consumer["id"])))
    cred = run(store.insert("keyauth_credentials", rows.keyauth(consumer["id"])))
    keep = run(store.insert("keyauth_credentials", rows.keyauth(other["id"])))
    app = run(store.insert("oauth2_credentials", rows.oauth2_app(consumer["id"])))
    token = run(store.insert("oauth2_tokens", rows.oauth2_token(app["id"])))

    deleted = run(store.delete("consumers", {"id": consumer["id"]}))

    assert deleted[0] == ("consumers", consumer)
    assert sorted(deleted[1:], key=repr) == sorted(
        [
            ("plugins", plugin),
            ("keyauth_credentials", cred),
            ("oauth2_credentials", app),
            ("oauth2_tokens", token),
        ],
        key=repr,
    )
    # a dependant comes after the row it depends on
    names = [t for t, _ in deleted]
    assert names.index("oauth2_credentials") < names.index("oauth2_tokens")
    assert run(store.get("plugins", {"id": plugin["id"]})) is None
    assert run(store.get("oauth2_tokens", {"id": token["id"]})) is None
    assert run(store.select("keyauth_credentials", {})) == [keep]
    assert run(store.get("apis", {"id": api["id"]})) == api


def test_delete_api_cascades_to_its_plugins(store: IStore, rows: Rows) -> None:
    """Deleting an API deletes its plugins but not global ones."""
    api = run(store.insert("apis", rows.api()))
    mine = run(store.insert("plugins", rows.plugin(api_id=api["id"])))
    glob = run(store.insert("plugins", rows.plugin(name="cors", config={})))
    deleted = run(store.delete("apis", {"id": api["id"]}))
    assert deleted == [("apis", api), ("plugins", mine)]
    assert run(store.select("plugins", {})) == [glob]


def test_delete_missing_row(store: IStore, rows: Rows) -> None:
    """Deleting a row that does not exist returns [] and logs no event."""
    before = run(store.events_after("node-a", 0, 100))
    assert run(store.delete("apis", {"id": rows.id()})) == []
    assert run(store.events_after("node-a", 0, 100)) == before


# --------------------------------------------------------------------------- update


def test_update_partial(store: IStore, rows: Rows) -> None:
    """update changes only the given columns and returns the whole new row."""
    api = run(store.insert("apis", rows.api()))
    new = run(store.update("apis", {"id": api["id"]}, {"upstream_url": "https://x.example.com"}))
    assert new == {**api, "upstream_url": "https://x.example.com"}
    assert run(store.get("apis", {"id": api["id"]})) == new


def test_update_with_none_clears(store: IStore, rows: Rows) -> None:
    """A None value sets the column to NULL (the DAO's full replace)."""
    api = run(store.insert("apis", rows.api(request_path="/p")))
    new = run(store.update("apis", {"id": api["id"]}, {"request_host": None}))
    assert new is not None and new["request_host"] is None and new["request_path"] == "/p"
    assert run(store.count("apis", {"request_host": None})) == 1


def test_update_json_and_boolean(store: IStore, rows: Rows) -> None:
    """update stores JSON values whole and booleans as bool."""
    plugin = run(store.insert("plugins", rows.plugin()))
    new = run(
        store.update("plugins", {"id": plugin["id"]}, {"config": {"a": [1]}, "enabled": False})
    )
    assert new is not None and new["config"] == {"a": [1]} and new["enabled"] is False


def test_update_missing_row(store: IStore, rows: Rows) -> None:
    """update of a missing row returns None and writes nothing."""
    assert run(store.update("apis", {"id": rows.id()}, {"name": "x"})) is None
    assert run(store.count("apis", {})) == 0


def test_update_unique_and_foreign_key_violations(store: IStore, rows: Rows) -> None:
    """update raises UniqueViolation / ForeignKeyViolation and leaves the row unchanged."""
    a = run(store.insert("apis", rows.api()))
    b = run(store.insert("apis", rows.api()))
    with pytest.raises(UniqueViolation) as e:
        run(store.update("apis", {"id": b["id"]}, {"name": a["name"]}))
    assert (e.value.field, e.value.value) == ("name", a["name"])
    # keeping one's own unique value is not a conflict
    assert run(store.update("apis", {"id": b["id"]}, {"name": b["name"]})) == b
    plugin = run(store.insert("plugins", rows.plugin()))
    missing = rows.id()
    with pytest.raises(ForeignKeyViolation) as e2:
        run(store.update("plugins", {"id": plugin["id"]}, {"consumer_id": missing}))
    assert (e2.value.field, e2.value.value) == ("consumer_id", missing)
    assert run(store.get("apis", {"id": b["id"]})) == b
    assert run(store.get("plugins", {"id": plugin["id"]})) == plugin


# --------------------------------------------------------------------------- filters, count


def test_filters(store: IStore, rows: Rows) -> None:
    """Filters are ANDed equality tests; None matches NULL; booleans match booleans."""
    api = run(store.insert("apis", rows.api()))
    consumer = run(store.insert("consumers", rows.consumer()))
    glob = run(store.insert("plugins", rows.plugin(name="cors", config={})))
    on_api = run(store.insert("plugins", rows.plugin(api_id=api["id"])))
    off = run(
        store.insert(
            "plugins", rows.plugin(api_id=api["id"], consumer_id=consumer["id"], enabled=False)
        )
    )

    def ids(filters: dict[str, Any]) -> set[str]:
        return {r["id"] for r in run(store.select("plugins", filters))}

    assert ids({}) == {glob["id"], on_api["id"], off["id"]}
    assert ids({"api_id": None}) == {glob["id"]}
    assert ids({"api_id": api["id"]}) == {on_api["id"], off["id"]}
    assert ids({"api_id": api["id"], "consumer_id": None}) == {on_api["id"]}
    assert ids({"enabled": False}) == {off["id"]}
    assert ids({"enabled": True, "name": "key-auth"}) == {on_api["id"]}
    assert ids({"name": "nothing"}) == set()
    assert run(store.count("plugins", {})) == 3
    assert run(store.count("plugins", {"api_id": None})) == 1
    assert run(store.count("plugins", {"enabled": True})) == 2


# --------------------------------------------------------------------------- paging


def _insert_consumers(store: IStore, rows: Rows, n: int, **kw: Any) -> list[dict[str, Any]]:
    return [run(store.insert("consumers", rows.consumer(**kw))) for _ in range(n)]


def test_paging_250_rows(store: IStore, rows: Rows) -> None:
    """250 rows in pages of 100: three pages, every row once, opaque tokens, none after the last."""
    inserted = _insert_consumers(store, rows, 250)
    seen: list[str] = []
    tokens: list[str | None] = []
    offset: str | None = None
    pages: list[Page] = []
    while True:
        page = run(store.page("consumers", {}, 100, offset))
        pages.append(page)
        assert page.total == 250
        seen.extend(r["id"] for r in page.rows)
        tokens.append(page.offset)
        offset = page.offset
        if offset is None:
            break
        assert len(pages) < 4
    assert [len(p.rows) for p in pages] == [100, 100, 50]
    assert sorted(seen) == sorted(r["id"] for r in inserted)
    assert tokens[2] is None
    for token in tokens[:2]:
        assert isinstance(token, str) and token
        # usable verbatim in a `next` URL, and not a readable id or page number
        assert re.fullmatch(r"[A-Za-z0-9_\-=+/]+", token)
        assert token not in seen and not token.isdigit()


def test_paging_with_filters_and_exact_fit(store: IStore, rows: Rows) -> None:
    """total counts the filtered rows; when the rows fill the page exactly no token is given."""
    _insert_consumers(store, rows, 5)
    tagged = [run(store.insert("consumers", rows.consumer(custom_id=f"t{i}"))) for i in range(3)]
    page = run(store.page("consumers", {"username": tagged[1]["username"]}, 10, None))
    assert page.rows == [tagged[1]] and page.total == 1 and page.offset is None
    page = run(store.page("consumers", {}, 8, None))
    assert len(page.rows) == 8 and page.total == 8 and page.offset is None


def test_empty_page(store: IStore) -> None:
    """An empty listing is no rows, total 0 and no token."""
    page = run(store.page("apis", {}, 100, None))
    assert page == Page(rows=[], total=0, offset=None)


def test_paging_survives_deletions(store: IStore, rows: Rows) -> None:
    """Deleting rows already listed does not skip or repeat rows on the next pages."""
    inserted = _insert_consumers(store, rows, 30)
    first = run(store.page("consumers", {}, 10, None))
    for row in first.rows[:5]:
        run(store.delete("consumers", {"id": row["id"]}))
    rest: list[str] = []
    offset = first.offset
    while offset is not None:
        page = run(store.page("consumers", {}, 10, offset))
        rest.extend(r["id"] for r in page.rows)
        offset = page.offset
    listed = {r["id"] for r in first.rows}
    assert sorted(rest) == sorted(r["id"] for r in inserted if r["id"] not in listed)


@pytest.mark.parametrize("token", ["not base64 !!", "", "bm9wZQ", "W10", "AAAA"])
def test_invalid_offset(store: IStore, rows: Rows, token: str) -> None:
    """A token this store did not produce raises InvalidOffset."""
    _insert_consumers(store, rows, 3)
    with pytest.raises(InvalidOffset):
        run(store.page("consumers", {}, 2, token))


# --------------------------------------------------------------------------- composite keys


def test_ratelimiting_composite_key(store: IStore) -> None:
    """Rate-limit metrics are keyed by (api_id, identifier, period_date, period) and counted in value."""
    key = {
        "api_id": "a1b2c3d4-0000-4000-8000-000000000001",
        "identifier": "1.2.3.4",
        "period_date": 1480291200000,
        "period": "minute",
    }
    row = run(store.insert("ratelimiting_metrics", {**key, "value": 1}))
    assert row == {**key, "value": 1}
    other = {**key, "period": "hour"}
    run(store.insert("ratelimiting_metrics", {**other, "value": 7}))
    with pytest.raises(UniqueViolation):
        run(store.insert("ratelimiting_metrics", {**key, "value": 2}))
    assert run(store.update("ratelimiting_metrics", key, {"value": 2})) == {**key, "value": 2}
    assert run(store.get("ratelimiting_metrics", key)) == {**key, "value": 2}
    assert run(store.get("ratelimiting_metrics", other)) == {**other, "value": 7}
    assert run(store.count("ratelimiting_metrics", {"identifier": "1.2.3.4"})) == 2


# --------------------------------------------------------------------------- TTL


def test_ttl_rows_expire(store: IStore, rows: Rows, harness: Harness) -> None:
    """A row written with a TTL disappears from every read after it, and its key is free again."""
    kept = run(store.insert("nodes", rows.node()))
    node = run(store.insert("nodes", rows.node(), ttl=1))
    assert run(store.get("nodes", {"name": node["name"]})) == node
    assert run(store.count("nodes", {})) == 2
    harness.advance(1.6)
    assert run(store.get("nodes", {"name": node["name"]})) is None
    assert run(store.select("nodes", {})) == [kept]
    assert run(store.count("nodes", {})) == 1
    assert run(store.page("nodes", {}, 10, None)).rows == [kept]
    assert (
        run(store.update("nodes", {"name": node["name"]}, {"cluster_listening_address": "x"}))
        is None
    )
    assert run(store.delete("nodes", {"name": node["name"]})) == []
    again = run(
        store.insert("nodes", {**node, "cluster_listening_address": "10.9.9.9:7946"}, ttl=60)
    )
    assert run(store.get("nodes", {"name": node["name"]})) == again


def test_ttl_refreshed_by_update(store: IStore, rows: Rows, harness: Harness) -> None:
    """update with a TTL restarts the row's clock (how nodes stay registered)."""
    node = run(store.insert("nodes", rows.node(), ttl=2))
    harness.advance(1.2)
    run(
        store.update(
            "nodes", {"name": node["name"]}, {"cluster_listening_address": "10.1.1.1:7946"}, ttl=2
        )
    )
    harness.advance(1.2)
    got = run(store.get("nodes", {"name": node["name"]}))
    assert got is not None and got["cluster_listening_address"] == "10.1.1.1:7946"


def test_expired_token_frees_unique_key_and_skips_cascade(
    store: IStore, rows: Rows, harness: Harness
) -> None:
    """An expired oauth2 token no longer holds its access_token, nor appears among cascaded rows."""
    consumer = run(store.insert("consumers", rows.consumer()))
    app = run(store.insert("oauth2_credentials", rows.oauth2_app(consumer["id"])))
    token = run(store.insert("oauth2_tokens", rows.oauth2_token(app["id"]), ttl=1))
    harness.advance(1.6)
    assert run(store.get("oauth2_tokens", {"access_token": token["access_token"]})) is None
    fresh = run(
        store.insert(
            "oauth2_tokens", rows.oauth2_token(app["id"], access_token=token["access_token"])
        )
    )
    deleted = run(store.delete("consumers", {"id": consumer["id"]}))
    assert [t for t, _ in deleted] == ["consumers", "oauth2_credentials", "oauth2_tokens"]
    assert deleted[2][1] == fresh


def test_ttl_only_on_ttl_tables(store: IStore, rows: Rows) -> None:
    """A TTL on a table without TTLs, or a TTL that is not positive, is a ValueError."""
    with pytest.raises(ValueError):
        run(store.insert("apis", rows.api(), ttl=10))
    with pytest.raises(ValueError):
        run(store.insert("nodes", rows.node(), ttl=0))


# --------------------------------------------------------------------------- change events


def test_change_events(store: IStore, rows: Rows) -> None:
    """Each write logs one event per changed row, with old/new rows and a per-origin seq."""
    start = run(store.events_after("node-a", 0, 1000))
    base = start[-1].seq if start else 0
    api = run(store.insert("apis", rows.api()))
    new = run(store.update("apis", {"id": api["id"]}, {"name": "renamed"}))
    plugin = run(store.insert("plugins", rows.plugin(api_id=api["id"])))
    run(store.delete("apis", {"id": api["id"]}))
    events = run(store.events_after("node-a", base, 100))
    assert [(e.collection, e.type) for e in events] == [
        ("apis", "create"),
        ("apis", "update"),
        ("plugins", "create"),
        ("apis", "delete"),
        ("plugins", "delete"),
    ]
    assert [e.seq for e in events] == list(range(base + 1, base + 6))
    assert all(e.origin == "node-a" for e in events)
    assert (events[0].old, events[0].new) == (None, api)
    assert (events[1].old, events[1].new) == (api, new)
    assert (events[3].old, events[3].new) == (new, None)
    assert (events[4].old, events[4].new) == (plugin, None)
    assert events == sorted(events, key=lambda e: e.at)
    assert run(store.events_after("node-a", base + 3, 100)) == events[3:]
    assert run(store.events_after("node-a", base, 2)) == events[:2]


def test_failed_write_logs_no_event(store: IStore, rows: Rows) -> None:
    """A write that raises leaves neither its row nor its event behind."""
    api = run(store.insert("apis", rows.api()))
    before = run(store.events_after("node-a", 0, 1000))
    with pytest.raises(UniqueViolation):
        run(store.insert("apis", rows.api(name=api["name"])))
    with pytest.raises(ForeignKeyViolation):
        run(store.insert("plugins", rows.plugin(api_id=rows.id())))
    assert run(store.events_after("node-a", 0, 1000)) == before


def test_events_of_two_origins(stores: StoreSet, store: IStore, rows: Rows) -> None:
    """Two nodes on one database number their events independently; events_since merges them."""
    peer = stores.open("node-b")
    run(store.insert("consumers", rows.consumer()))
    run(peer.insert("consumers", rows.consumer()))
    run(store.insert("consumers", rows.consumer()))
    a = run(store.events_after("node-a", 0, 100))
    b = run(peer.events_after("node-b", 0, 100))
    assert [e.seq for e in a][-2:] == [a[-2].seq, a[-2].seq + 1]
    assert len(b) == 1 and b[0].origin == "node-b"
    # both nodes read the same log
    assert run(peer.events_after("node-a", 0, 100)) == a
    since = run(store.events_since(min(e.at for e in a + b), 100))
    assert {(e.origin, e.seq) for e in a + b} <= {(e.origin, e.seq) for e in since}
    assert since == sorted(since, key=lambda e: (e.at, e.origin, e.seq))
    assert run(store.events_since(max(e.at for e in a + b) + 1, 100)) == []


def test_prune_events_keeps_sequence(store: IStore, rows: Rows) -> None:
    """prune_events drops old events and reports how many; later events keep counting up."""
    for _ in range(3):
        run(store.insert("consumers", rows.consumer()))
    events = run(store.events_after("node-a", 0, 100))
    last = events[-1]
    pruned = run(store.prune_events(last.at + 1))
    assert pruned >= len(events)
    assert run(store.events_after("node-a", 0, 100)) == []
    assert run(store.prune_events(last.at + 1)) == 0
    run(store.insert("consumers", rows.consumer()))
    after = run(store.events_after("node-a", 0, 100))
    assert [e.seq for e in after] == [last.seq + 1]


# --------------------------------------------------------------------------- migrations


def test_migrations_idempotent(store: IStore, harness: Harness) -> None:
    """A second migrate runs nothing; executed_migrations lists every name in order."""
    assert run(store.migrate(harness.migrations)) == []
    assert run(store.executed_migrations()) == {
        identifier: [name for name, _ in entries]
        for identifier, entries in harness.migrations.items()
    }


def test_migrate_reports_what_ran(stores: StoreSet, harness: Harness) -> None:
    """A fresh database runs every migration, reported as "<identifier>: <name>", core first."""
    fresh = stores.open("node-a")
    assert run(fresh.executed_migrations()) == {}
    core_only = {"core": harness.migrations["core"]}
    ran = run(fresh.migrate(core_only))
    assert ran == [f"core: {name}" for name, _ in harness.migrations["core"]]
    ran = run(fresh.migrate(harness.migrations))
    assert ran and all(not r.startswith("core: ") for r in ran)
    assert "key-auth: 2015-07-31-172400_init_keyauth" in ran


def test_concurrent_migrations_run_once(stores: StoreSet, harness: Harness) -> None:
    """Two stores migrating one fresh database at the same time run each migration once."""
    from twisted.internet.defer import Deferred, gatherResults

    a = stores.open("node-a")
    b = stores.open("node-b")
    from tests.reactor_thread import call

    def both() -> Deferred[list[list[str]]]:
        return gatherResults(
            [
                Deferred.fromCoroutine(a.migrate(harness.migrations)),
                Deferred.fromCoroutine(b.migrate(harness.migrations)),
            ]
        )

    first, second = call(both)
    expected = [f"{i}: {name}" for i, entries in harness.migrations.items() for name, _ in entries]
    assert sorted(first + second) == sorted(expected)
    assert run(a.executed_migrations()) == run(b.executed_migrations())


def test_reset(store: IStore, rows: Rows, harness: Harness) -> None:
    """reset drops everything: no migrations recorded, and re-migrating gives empty tables."""
    run(store.insert("apis", rows.api()))
    run(store.reset())
    assert run(store.executed_migrations()) == {}
    ran = run(store.migrate(harness.migrations))
    assert len(ran) == sum(len(v) for v in harness.migrations.values())
    assert run(store.count("apis", {})) == 0
    assert run(store.events_after("node-a", 0, 10)) == []


def test_ping(store: IStore) -> None:
    """ping answers when the database is there."""
    assert run(store.ping()) is None


# --------------------------------------------------------------------------- counters

_COUNTER = {
    "api_id": "a1b2c3d4-0000-4000-8000-000000000002",
    "identifier": "consumer-1",
    "period_date": 1480291200000,
    "period": "second",
}


def test_counters_start_at_zero_and_add(store: IStore) -> None:
    """read_counters gives 0 for a missing row; increment_counters creates and adds per key."""
    other = {**_COUNTER, "period": "minute"}
    assert run(store.read_counters("ratelimiting_metrics", [_COUNTER, other])) == [0, 0]
    run(store.increment_counters("ratelimiting_metrics", [_COUNTER, other], 1))
    run(store.increment_counters("ratelimiting_metrics", [_COUNTER], 5))
    assert run(store.read_counters("ratelimiting_metrics", [_COUNTER, other])) == [6, 1]
    assert run(store.read_counters("ratelimiting_metrics", [])) == []
    row = run(store.get("ratelimiting_metrics", _COUNTER))
    assert row == {**_COUNTER, "value": 6}


def test_counters_of_two_tables_and_identifiers_are_apart(store: IStore) -> None:
    """Counters are keyed by their table and by every primary-key column."""
    other = {**_COUNTER, "identifier": "1.2.3.4"}
    later = {**_COUNTER, "period_date": 1480291201000}
    run(store.increment_counters("ratelimiting_metrics", [_COUNTER], 2))
    run(store.increment_counters("response_ratelimiting_metrics", [_COUNTER], 3))
    assert run(store.read_counters("ratelimiting_metrics", [_COUNTER, other, later])) == [2, 0, 0]
    assert run(store.read_counters("response_ratelimiting_metrics", [_COUNTER])) == [3]


def test_counters_concurrent_increments_are_not_lost(stores: StoreSet) -> None:
    """Two stores (two nodes) incrementing the same counter at once lose no increment."""
    a = stores.open("node-a", migrate=True)
    b = stores.open("node-b")

    async def burst() -> None:
        calls = [
            ensureDeferred(
                (a if i % 2 else b).increment_counters("ratelimiting_metrics", [_COUNTER], 1)
            )
            for i in range(40)
        ]
        await gatherResults(calls)

    run(burst())
    assert run(a.read_counters("ratelimiting_metrics", [_COUNTER])) == [40]
    assert run(b.read_counters("ratelimiting_metrics", [_COUNTER])) == [40]


def test_counter_with_null_value_counts_from_zero(store: IStore) -> None:
    """A counter row written with a NULL value (via insert) is incremented as if it held 0."""
    run(store.insert("ratelimiting_metrics", {**_COUNTER, "value": None}))
    run(store.increment_counters("ratelimiting_metrics", [_COUNTER], 4))
    assert run(store.read_counters("ratelimiting_metrics", [_COUNTER])) == [4]


def test_counter_keys_need_the_whole_primary_key(store: IStore) -> None:
    """A counter key without every primary-key column is a ValueError; unknown columns KeyError."""
    partial = {k: v for k, v in _COUNTER.items() if k != "period"}
    with pytest.raises(ValueError):
        run(store.increment_counters("ratelimiting_metrics", [partial], 1))
    with pytest.raises(ValueError):
        run(store.read_counters("ratelimiting_metrics", [partial]))
    with pytest.raises(KeyError):
        run(store.read_counters("ratelimiting_metrics", [{**_COUNTER, "nope": 1}]))


def test_misuse_raises_value_error(store: IStore, rows: Rows) -> None:
    """A key naming no single row, a changed primary key or a page size < 1 is a ValueError."""
    api = run(store.insert("apis", rows.api()))
    with pytest.raises(ValueError):
        run(store.get("apis", {"upstream_url": api["upstream_url"]}))
    with pytest.raises(ValueError):
        run(store.update("apis", {"id": api["id"]}, {"id": rows.id()}))
    with pytest.raises(ValueError):
        run(store.page("apis", {}, 0, None))
    with pytest.raises(ValueError):
        run(store.insert("apis", rows.api(id=None)))
    assert run(store.select("apis", {})) == [api]


def test_get_with_extra_conditions(store: IStore, rows: Rows) -> None:
    """Columns beyond the key are extra conditions: a plugin is found by (id, name) only when both match."""
    plugin = run(store.insert("plugins", rows.plugin()))
    assert run(store.get("plugins", {"id": plugin["id"], "name": "key-auth"})) == plugin
    assert run(store.get("plugins", {"id": plugin["id"], "name": "cors"})) is None
