"""Tag filters (Kong 1.1 ``?tags=``) in the IStore contract, on every backend of backends.py.

A :class:`~kongtx.store.tables.TagFilter` under the ``tags`` column selects rows
holding all or any of its tags; listings, pages and counts must agree on it
whether the backend filters inside its query (sqlite, postgres) or while it
pages (memory, cassandra).
"""

from __future__ import annotations

from typing import Any

from kongtx.store.interface import IStore
from kongtx.store.rules import TagFilter
from kongtx.store.tables import TABLES
from tests.reactor_thread import run
from tests.store.helpers import Rows


def _consumers(store: IStore, rows: Rows, tag_sets: dict[str, Any]) -> None:
    for username, tags in tag_sets.items():
        run(store.insert("consumers", rows.consumer(username=username, tags=tags)))


def _names(found: list[dict[str, Any]]) -> list[str]:
    return sorted(r["username"] for r in found)


SETS = {
    "ab": ["a", "b"],
    "a": ["a"],
    "bz": ["b", "z"],
    "none": None,
    "empty": [],
}


def test_tags_round_trip(store: IStore, rows: Rows) -> None:
    """A tags list comes back as the same list, in order; NULL stays None."""
    tagged = run(store.insert("consumers", rows.consumer(tags=["z", "a"])))
    assert tagged["tags"] == ["z", "a"]
    assert run(store.get("consumers", {"id": tagged["id"]}))["tags"] == ["z", "a"]
    plain = run(store.insert("consumers", rows.consumer()))
    assert plain["tags"] is None
    assert "tags" in TABLES["consumers"].column_names


def test_select_all_and_any(store: IStore, rows: Rows) -> None:
    """mode=all keeps rows holding every tag; mode=any rows holding one of them."""
    _consumers(store, rows, SETS)
    both = run(store.select("consumers", {"tags": TagFilter(("a", "b"), "all")}))
    assert _names(both) == ["ab"]
    either = run(store.select("consumers", {"tags": TagFilter(("a", "z"), "any")}))
    assert _names(either) == ["a", "ab", "bz"]
    assert run(store.select("consumers", {"tags": TagFilter(("nope",))})) == []


def test_count_agrees(store: IStore, rows: Rows) -> None:
    """count applies the tag filter like select does."""
    _consumers(store, rows, SETS)
    assert run(store.count("consumers", {"tags": TagFilter(("b",))})) == 2
    assert run(store.count("consumers", {"tags": TagFilter(("a", "b"), "any")})) == 3
    assert run(store.count("consumers", {"tags": TagFilter(("q",))})) == 0


def test_paging_with_tag_filter(store: IStore, rows: Rows) -> None:
    """Pages of one row walk every match exactly once, each page carrying the filtered total."""
    for i in range(7):
        run(
            store.insert(
                "consumers",
                rows.consumer(username=f"u{i}", tags=["even"] if i % 2 == 0 else ["odd"]),
            )
        )
    wanted = {"tags": TagFilter(("even",))}
    seen: list[str] = []
    offset = None
    for _ in range(10):
        page = run(store.page("consumers", wanted, 1, offset))
        assert page.total == 4
        seen += [r["username"] for r in page.rows]
        offset = page.offset
        if offset is None:
            break
    assert sorted(seen) == ["u0", "u2", "u4", "u6"]


def test_tag_filter_ands_with_equality(store: IStore, rows: Rows) -> None:
    """A tag filter combines with equality filters on other columns."""
    run(store.insert("consumers", rows.consumer(username="x", custom_id="c1", tags=["t"])))
    run(store.insert("consumers", rows.consumer(username="y", custom_id="c2", tags=["t"])))
    found = run(store.select("consumers", {"tags": TagFilter(("t",)), "custom_id": "c2"}))
    assert _names(found) == ["y"]


def test_update_changes_what_matches(store: IStore, rows: Rows) -> None:
    """After an update of its tags a row matches the new tags, not the old ones."""
    row = run(store.insert("consumers", rows.consumer(tags=["old"])))
    run(store.update("consumers", {"id": row["id"]}, {"tags": ["new"]}))
    assert run(store.count("consumers", {"tags": TagFilter(("old",))})) == 0
    assert run(store.count("consumers", {"tags": TagFilter(("new",))})) == 1


def test_plugin_owned_tables(store: IStore, rows: Rows) -> None:
    """Credential tables (keyauth_credentials) and plugins filter on tags too."""
    consumer = run(store.insert("consumers", rows.consumer()))
    run(store.insert("keyauth_credentials", rows.keyauth(consumer["id"], tags=["ci"])))
    run(store.insert("keyauth_credentials", rows.keyauth(consumer["id"])))
    found = run(store.select("keyauth_credentials", {"tags": TagFilter(("ci",))}))
    assert [r["tags"] for r in found] == [["ci"]]
    run(store.insert("plugins", rows.plugin(tags=["edge", "v2"])))
    page = run(store.page("plugins", {"tags": TagFilter(("v2", "x"), "any")}, 10, None))
    assert page.total == 1 and page.rows[0]["tags"] == ["edge", "v2"]
