"""The thin public modules of split packages re-export what their importers use.

kongtx.declarative and kongtx.workers were single modules; importers (the Admin
API, the CLI, the node, tests, bench/run) still use the package names.
"""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "package, submodules",
    [
        ("kongtx.declarative", ("document", "load", "transfer", "state")),
        ("kongtx.workers", ("control", "master", "proxy_master", "worker", "service")),
    ],
)
def test_every_export_is_the_submodules_object(package: str, submodules: tuple[str, ...]) -> None:
    """Each name in ``__all__`` is the very object one of the package's submodules defines."""
    module = importlib.import_module(package)
    homes = [importlib.import_module(f"{package}.{name}") for name in submodules]
    for name in module.__all__:
        exported = getattr(module, name)
        assert any(getattr(home, name, None) is exported for home in homes), name


def test_importers_names_are_exported() -> None:
    """The names the Admin API, CLI, node and tests import from the packages are there."""
    declarative = importlib.import_module("kongtx.declarative")
    for name in (
        "DeclarativeError",
        "DeclarativeState",
        "dump",
        "export_document",
        "format_for",
        "import_document",
        "load_declarative_config",
        "parse",
        "read_file",
        "validate_document",
    ):
        assert name in declarative.__all__, name
    workers = importlib.import_module("kongtx.workers")
    for name in ("ProxyWorkers", "WorkerPool", "fan_out", "worker_command", "worker_count"):
        assert name in workers.__all__, name


def test_workers_runs_as_a_module() -> None:
    """``python -m kongtx.workers`` (how a master spawns a worker) finds the package's ``main``."""
    entry = importlib.import_module("kongtx.workers.__main__")
    assert callable(entry.main)
    assert importlib.import_module("kongtx.workers").worker_command(1, None, None)[1:3] == [
        "-m",
        "kongtx.workers",
    ]
