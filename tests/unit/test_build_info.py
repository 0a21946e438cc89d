"""kongtx.build_info: which build runs, and whether an installed package is the checkout's code."""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import pkgutil
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

import kongtx
from kongtx import build_info

REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_holds_no_compiled_module() -> None:
    """No .so in the checkout: it would shadow its .py (edits would do nothing); the
    compiled build lives in site-packages (`make install`), never in place."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    found = glob.glob("kongtx/**/*.so", root_dir=REPO, recursive=True)
    found += glob.glob(f"kongtx/**/*{suffix}", root_dir=REPO, recursive=True)
    found += glob.glob("*__mypyc*.so", root_dir=REPO)
    assert found == [], "remove them (bench/mypyc-try --clean)"


def test_unit_tests_run_the_pure_checkout() -> None:
    assert build_info.compiled_modules() == []
    assert build_info.describe() == "hot path: pure Python"


def test_the_hot_path_names_real_modules_the_cache_among_them() -> None:
    """The node cache (peeked several times per request, its entry forms read on each hit)
    and the balancers' peek are compiled."""
    for name in build_info.HOT_PATH:
        assert (REPO / build_info.source_file(name)).is_file(), name
    cache = {"kongtx.cache", "kongtx.cache_entries"}
    assert cache | {"kongtx.balancer.registry"} <= set(build_info.HOT_PATH)
    assert len(set(build_info.HOT_PATH)) == len(build_info.HOT_PATH)


def test_every_proxy_module_is_compiled_or_left_pure_on_purpose() -> None:
    """A module split out of a compiled one would silently run pure: list it in HOT_PATH
    (or, if it is not on the per-request path, in PURE_PROXY)."""
    found = {
        "kongtx.proxy" if p.name == "__init__.py" else f"kongtx.proxy.{p.stem}"
        for p in (REPO / "kongtx" / "proxy").glob("*.py")
    }
    listed = {m for m in build_info.HOT_PATH if m.startswith("kongtx.proxy")}
    assert found - listed - set(build_info.PURE_PROXY) == set()
    assert listed & set(build_info.PURE_PROXY) == set()


def pure_subclasses_of_compiled(hot_path: set[str]) -> list[tuple[str, str]]:
    """(pure class, compiled base) pairs among kongtx's classes, were ``hot_path`` compiled."""
    found = []
    for info in pkgutil.walk_packages(kongtx.__path__, "kongtx."):
        if info.name.endswith("__main__") or info.name in hot_path:
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != info.name:
                continue
            for base in cls.__mro__[1:]:
                if base.__module__ in hot_path:
                    found.append((f"{info.name}.{cls.__qualname__}", base.__qualname__))
    return found


def test_no_pure_class_inherits_from_a_compiled_one() -> None:
    """Compiled code calls its own methods natively: a pure subclass's overrides are
    never reached (a pure fast_writing under a compiled fast_parsing failed every
    request on its NotImplementedError hooks; a compiled BodyLoggingPlugin broke the
    pure runscope handler).  A class whose subclasses stay pure must stay pure too."""
    assert pure_subclasses_of_compiled(set(build_info.HOT_PATH)) == []
    # the check sees the case it guards against
    without_writing = set(build_info.HOT_PATH) - {"kongtx.proxy.fast_writing"}
    assert ("kongtx.proxy.fast_writing.ResponseWriter", "RequestReader") in (
        pure_subclasses_of_compiled(without_writing)
    )


def copy_sources(to: Path) -> Path:
    shutil.copytree(REPO / "kongtx", to / "kongtx", ignore=shutil.ignore_patterns("__pycache__"))
    (to / "twisted" / "plugins").mkdir(parents=True)
    shutil.copy(REPO / build_info.PLUGIN_FILE, to / build_info.PLUGIN_FILE)
    return to


def test_digest_matches_a_copy_and_changes_with_any_source(tmp_path: Path) -> None:
    copy = copy_sources(tmp_path / "site")
    expected = build_info.source_digest(str(REPO))
    assert build_info.source_digest(str(copy)) == expected
    # a compiled module and package data next to the sources do not count
    (copy / "kongtx" / "router.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert build_info.source_digest(str(copy)) == expected

    router = copy / "kongtx" / "router.py"
    router.write_bytes(router.read_bytes() + b"\n")
    assert build_info.source_digest(str(copy)) != expected
    shutil.copy(REPO / "kongtx" / "router.py", router)

    (copy / "kongtx" / "new.py").write_text("")
    assert build_info.source_digest(str(copy)) != expected
    (copy / "kongtx" / "new.py").unlink()

    (copy / build_info.PLUGIN_FILE).unlink()
    assert build_info.source_digest(str(copy)) != expected


def test_process_env_puts_the_checkout_first_or_nowhere(tmp_path: Path) -> None:
    checkout = str(tmp_path / "checkout")
    os.mkdir(checkout)
    other = str(tmp_path / "other")
    env = {"PYTHONPATH": os.pathsep.join([checkout, other, os.path.join(checkout, "tests")])}
    pure = build_info.process_env(False, checkout, env)
    assert pure["PYTHONPATH"] == os.pathsep.join([checkout, other])
    installed = build_info.process_env(True, checkout, env)
    assert installed["PYTHONPATH"] == other
    assert "PYTHONPATH" not in build_info.process_env(True, checkout, {"PYTHONPATH": checkout})
    assert build_info.process_env(True, checkout, pure) == installed


def test_a_checkout_that_is_not_installed_runs_itself(tmp_path: Path) -> None:
    """A checkout whose sources are not the installed package's runs itself, pure."""
    copy = copy_sources(tmp_path / "checkout")
    (copy / "kongtx" / "edited.py").write_text("")
    build = build_info.installed_build(str(copy), sys.executable)
    assert not build.installed
    assert build.reason.startswith("the checkout, pure Python: ")
    assert build_info.installed_build(str(copy), sys.executable, "checkout").kind == "checkout"
    if "is not this checkout's code" in build.reason:  # a stale install: forcing takes it
        assert build_info.installed_build(str(copy), sys.executable, "installed").installed
    else:
        with pytest.raises(RuntimeError, match="KONG_TEST_BUILD=installed"):
            build_info.installed_build(str(copy), sys.executable, "installed")
    with pytest.raises(ValueError):
        build_info.installed_build(str(copy), sys.executable, "compiled")
