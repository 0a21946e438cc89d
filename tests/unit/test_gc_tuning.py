"""kongtx.gc_tuning's release of the C heap's free pages, and when the node cache asks for it."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from kongtx import cache as cache_module
from kongtx import gc_tuning
from kongtx.cache import RELEASE_DELAY, RELEASE_FROM, RELEASE_LARGE, Cache
from kongtx.clock import Clock

REPO = Path(__file__).resolve().parents[2]
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_gives_freed_heap_pages_back() -> None:
    """Blocks freed in the middle of the heap stay resident until released."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(400)]  # 25 MiB, below mmap's threshold
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    keep = blocks[-1]  # a block above them: the freed ones are not the heap's top
    for block in blocks[:-1]:
        libc.free(block)
    before = rss_kb()
    assert gc_tuning.release_free_memory() is True
    assert before - rss_kb() > 10 * 1024
    libc.free(keep)


def test_release_is_a_no_op_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_tuning, "_trim", [None])
    assert gc_tuning.release_free_memory() is False


def test_tune_after_startup_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = gc_tuning.release_free_memory
    monkeypatch.setattr(gc_tuning, "release_free_memory", lambda: calls.append(1) or real())
    before = gc.get_threshold()
    try:
        gc_tuning.tune_after_startup()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert calls == [1]


class Releases:
    """A cache on a fake clock, counting the releases it makes (the real one runs too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reactor = task.Clock()
        self.clock = Clock(self.reactor)
        self.cache = Cache(self.clock, max_bytes=2**40)
        self.count = 0
        real = cache_module.release_free_memory

        def counted() -> bool:
            self.count += 1
            return real()

        monkeypatch.setattr(cache_module, "release_free_memory", counted)

    def fill(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            self.cache.set(f"consumers:{i}", {"id": str(i), "username": f"u{i}"})

    def later(self) -> None:
        self.reactor.advance(RELEASE_DELAY)


def test_a_growing_cache_releases_once_a_moment_later(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Releases(monkeypatch)
    r.fill(0, RELEASE_FROM - 1)
    r.later()
    assert r.count == 0 and r.clock.pending == 0  # small caches never ask
    r.fill(RELEASE_FROM - 1, RELEASE_FROM + 100)
    assert r.count == 0 and r.clock.pending == 1  # never inside set: on the clock
    r.reactor.advance(RELEASE_DELAY / 2)
    r.fill(RELEASE_FROM + 100, RELEASE_FROM + RELEASE_FROM // 4 + 10)  # asks again
    assert r.clock.pending == 1  # one release for both
    r.later()
    assert r.count == 1 and r.clock.pending == 0
    # the next one once it grew by another quarter
    r.fill(RELEASE_FROM + RELEASE_FROM // 4 + 10, RELEASE_FROM + RELEASE_FROM // 2)
    r.later()
    assert r.count == 1
    r.fill(RELEASE_FROM + RELEASE_FROM // 2, 2 * RELEASE_FROM)
    r.later()
    assert r.count == 2 and r.clock.pending == 0
    # hits never ask
    for i in range(0, 2 * RELEASE_FROM, 7):
        assert r.cache.peek(f"consumers:{i}")[0]
    r.later()
    assert r.count == 2 and r.clock.pending == 0


def test_a_large_value_and_a_large_flush_release(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Releases(monkeypatch)

    class Router:
        cache_size = RELEASE_LARGE

    r.cache.set("ALL_APIS_BY_DIC", Router())
    r.later()
    assert r.count == 1
    r.cache.set("small", object())  # an estimate of 32 bytes
    r.later()
    assert r.count == 1
    r.fill(0, RELEASE_FROM)
    r.later()
    assert r.count == 2
    r.cache.flush()
    assert len(r.cache) == 0 and r.clock.pending == 1
    r.later()
    assert r.count == 3
    # after a flush the count starts over
    r.fill(0, RELEASE_FROM - 1)
    r.later()
    assert r.count == 3 and r.clock.pending == 0


def _setup_py() -> Any:
    """setup.py as a module (it builds nothing unless run with a build command)."""
    spec = importlib.util.spec_from_file_location("kongtx_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU-style linker flags")
def test_the_shared_library_exports_only_its_init(tmp_path: Path) -> None:
    """setup.py's link arguments for mypyc's shared library, on a library built with them."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler: Any = new_compiler()
    customize_compiler(compiler)
    if shutil.which(compiler.compiler_so[0]) is None or shutil.which("nm") is None:
        pytest.skip("no C compiler or nm here (the build is pure Python then)")
    args = _setup_py().shared_library_link_args(compiler, str(tmp_path))
    assert any(a.startswith("-Wl,--version-script=") for a in args)
    lib = tmp_path / "lib.c"
    lib.write_text(
        "#include <Python.h>\n"
        "static int hidden_value = 7;\n"
        "int internal_function(void) { return hidden_value; }\n"
        "PyMODINIT_FUNC PyInit_lib(void) { return NULL; }\n"
    )
    include = sysconfig.get_paths()["include"]
    objects = compiler.compile(
        [str(lib)], output_dir="/", include_dirs=[include], extra_postargs=["-fPIC"]
    )
    compiler.link_shared_object(objects, str(tmp_path / "lib.so"), extra_postargs=args)
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(tmp_path / "lib.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PyInit_lib" in symbols
    assert "internal_function" not in symbols
