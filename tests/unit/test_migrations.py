"""kongtx.store.migrations: which packaged scripts run, under which names, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from kongtx.store import migrations
from kongtx.store.migrations import available_identifiers, load_migrations
from kongtx.store.tables import IDENTIFIERS, OWNERS, TABLES


def test_core_names_are_kongs() -> None:
    """sqlite core migrations carry Kong's names (SPEC §7.3) plus kongtx's cluster_events, tags and upstreams."""
    core = load_migrations("sqlite", ["core"])["core"]
    assert [name for name, _ in core] == [
        "2015-01-12-175310_init_schema",
        "2015-11-23-817313_nodes",
        "2026-11-28-000000_cluster_events",
        "2026-11-28-000001_tags",
        "2026-11-28-000002_upstreams",
    ]
    assert "CREATE TABLE apis" in core[0][1]


def test_plugin_names_are_kongs() -> None:
    """Plugin migrations keep Kong's Postgres names, in order."""
    loaded = load_migrations("sqlite", list(IDENTIFIERS))
    names = {i: [n for n, _ in entries] for i, entries in loaded.items()}
    assert names["key-auth"] == ["2015-07-31-172400_init_keyauth", "2026-11-28-000001_tags"]
    assert names["basic-auth"] == ["2015-08-03-132400_init_basicauth", "2026-11-28-000001_tags"]
    assert names["hmac-auth"] == ["2015-09-16-132400_init_hmacauth", "2026-11-28-000001_tags"]
    assert names["jwt"] == ["2015-06-09-jwt-auth", "2016-03-07-jwt-alg", "2026-11-28-000001_tags"]
    assert names["oauth2"] == ["2015-08-03-132400_init_oauth2", "2026-11-28-000001_tags"]
    assert names["acl"] == ["2015-08-25-841841_init_acl", "2026-11-28-000001_tags"]
    assert names["rate-limiting"] == ["2015-08-03-132400_init_ratelimiting"]
    assert names["response-ratelimiting"] == ["2015-08-03-132400_init_response_ratelimiting"]


def test_core_first_and_order_kept() -> None:
    """core runs first whatever the order given; the others keep theirs; duplicates collapse."""
    loaded = load_migrations("sqlite", ["oauth2", "acl", "core", "oauth2"])
    assert list(loaded) == ["core", "oauth2", "acl"]


def test_identifier_without_scripts_is_left_out() -> None:
    """A plugin that owns no table (cors) has no entry."""
    assert list(load_migrations("sqlite", ["core", "cors"])) == ["core"]


def test_every_table_owner_has_sqlite_scripts() -> None:
    """Each identifier that owns a table in TABLES has sqlite migrations."""
    assert set(OWNERS) == set(TABLES)
    assert set(IDENTIFIERS) <= set(available_identifiers("sqlite"))
    assert available_identifiers("sqlite")[0] == "core"


def test_unknown_backend_and_bad_identifier() -> None:
    """An unknown backend or an identifier that is a path raises ValueError."""
    with pytest.raises(ValueError):
        load_migrations("mysql", ["core"])
    with pytest.raises(ValueError):
        load_migrations("sqlite", ["../sqlite/core"])


def _fake_backend(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    def backend_dir(backend: str) -> Path:
        return root / backend

    monkeypatch.setattr(migrations, "_backend_dir", backend_dir)


def test_files_sorted_by_number_not_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files run in numeric order (10 after 9); other files are ignored; the number is not in the name."""
    d = tmp_path / "sqlite" / "x"
    d.mkdir(parents=True)
    (d / "10_b.sql").write_text("B")
    (d / "9_a.sql").write_text("A")
    (d / "README.md").write_text("not a migration")
    _fake_backend(monkeypatch, tmp_path)
    assert load_migrations("sqlite", ["x"]) == {"x": [("a", "A"), ("b", "B")]}


@pytest.mark.parametrize("names", [["init.sql"], ["001_a.sql", "1_b.sql"]])
def test_badly_named_files_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    """A script without a number, or two scripts with one number, is an error, not a guess."""
    d = tmp_path / "sqlite" / "x"
    d.mkdir(parents=True)
    for name in names:
        (d / name).write_text("SELECT 1;")
    _fake_backend(monkeypatch, tmp_path)
    with pytest.raises(ValueError):
        load_migrations("sqlite", ["x"])


def test_cassandra_reads_cql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cassandra backend reads .cql files and ignores .sql ones."""
    d = tmp_path / "cassandra" / "core"
    d.mkdir(parents=True)
    (d / "001_2015-01-12-175310_skeleton.cql").write_text("CQL")
    (d / "002_other.sql").write_text("SQL")
    _fake_backend(monkeypatch, tmp_path)
    assert load_migrations("cassandra", ["core"]) == {
        "core": [("2015-01-12-175310_skeleton", "CQL")]
    }
