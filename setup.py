"""Build kongtx with its proxy hot path compiled by mypyc (issue 8); metadata is in setup.cfg.

The modules of ``kongtx.build_info.HOT_PATH`` become C extensions (mypyc type-checks
them with pyproject.toml's [tool.mypy] first, so twisted, httptools, mypy-zope and
the type stubs must be importable: ``make install`` installs them, then builds with
``pip install --no-build-isolation``).  A pure Python build instead, saying why, when
``KONGTX_PURE=1``, when mypyc is not importable, or when mypyc fails.  Every extension
is optional: a C compile that fails (no gcc, no Python.h) leaves its module pure
rather than failing the install, and a module whose shared library did not build is
not built either (it would import a library that is not there).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import sysconfig
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CompileError

HERE = os.path.dirname(os.path.abspath(__file__))


def _hot_path() -> list[str]:
    """kongtx/build_info.py's HOT_PATH as source files, read without importing kongtx."""
    spec = importlib.util.spec_from_file_location(
        "kongtx_build_info", os.path.join(HERE, "kongtx", "build_info.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return [module.source_file(name) for name in module.HOT_PATH]


def _say(message: str) -> None:
    print(f"kongtx setup.py: {message}", file=sys.stderr)


#: setup.py commands that build extensions (pip also runs it for egg_info/dist_info, twice:
#: no compile there)
BUILDING = {"build", "build_ext", "bdist_wheel", "install", "develop", "editable_wheel"}


def ext_modules() -> list[Any]:
    if not BUILDING.intersection(sys.argv[1:]):
        return []
    if os.environ.get("KONGTX_PURE") == "1":
        _say("KONGTX_PURE=1: a pure Python build")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        _say(f"mypyc is not importable ({e}): a pure Python build")
        return []
    files = _hot_path()
    _say(f"compiling {len(files)} hot-path modules with mypyc (KONGTX_PURE=1: pure Python)")
    try:
        extensions: list[Any] = mypycify(files, opt_level="3")
    except SystemExit as e:  # mypyc reports type errors by exiting
        _say(f"mypyc failed ({e}): a pure Python build")
        return []
    for extension in extensions:
        extension.optional = True
    return extensions


EXT_MODULES = ext_modules()


def _shared_libraries() -> list[str]:
    """mypyc's shared library (``<hash>__mypyc``), which every compiled module imports."""
    return [e.name for e in EXT_MODULES if e.name.endswith("__mypyc")]


#: The shared library's only symbol for the dynamic linker: its ``PyInit_`` (each compiled
#: module reaches the code through a capsule the library's module holds, not by symbol)
EXPORTS = "{ global: PyInit_*; local: *; };\n"


def _loads(compiler: Any, build_temp: str, link_args: list[str]) -> bool:
    """Whether a shared library linked with ``link_args`` links here and this process loads it."""
    import ctypes

    probe = os.path.join(build_temp, "kongtx_link_probe")
    try:
        with open(probe + ".c", "w") as f:
            f.write("int kongtx_probe_value = 1;\nint *kongtx_probe = &kongtx_probe_value;\n")
        objects = compiler.compile([probe + ".c"], output_dir="/", extra_postargs=["-fPIC"])
        compiler.link_shared_object(objects, probe + ".so", extra_postargs=link_args)
        ctypes.CDLL(os.path.abspath(probe + ".so"))
    except Exception:
        return False
    return True


def shared_library_link_args(compiler: Any, build_temp: str) -> list[str]:
    """What links mypyc's shared library smaller in memory (issue 8: a worker's RSS).

    Exporting only ``PyInit_`` shrinks the dynamic symbol table and turns the symbol
    relocations the loader applies into relative ones (and calls through the PLT into
    direct calls); ``-z pack-relative-relocs`` (binutils 2.38, glibc 2.36) then packs
    those.  Together ~0.3 MB less resident per process, the same compiled code.
    Linux only; the packing only where a library linked with it loads.
    """
    if not sys.platform.startswith("linux"):
        return []
    os.makedirs(build_temp, exist_ok=True)
    script = os.path.join(build_temp, "kongtx-exports.map")
    with open(script, "w") as f:
        f.write(EXPORTS)
    args = [f"-Wl,--version-script={script}"]
    if _loads(compiler, build_temp, ["-Wl,-z,pack-relative-relocs"]):
        args.append("-Wl,-z,pack-relative-relocs")
    return args


class BuildExt(build_ext):
    """Leaves a module pure when its shared library did not build; links that library small."""

    def build_extension(self, ext: Any) -> None:
        if ext.name in _shared_libraries():
            ext.extra_link_args = list(ext.extra_link_args or []) + shared_library_link_args(
                self.compiler, os.path.abspath(self.build_temp)
            )
        else:
            missing = [
                name
                for name in _shared_libraries()
                if not os.path.exists(self.get_ext_fullpath(name))
            ]
            if missing:
                raise CompileError(f"{ext.name} stays pure: {', '.join(missing)} did not build")
        super().build_extension(ext)


class BuildPy(build_py):
    """Drops what earlier builds left in build/lib that this one does not make.

    build/lib outlives a build: a pure build after a compiled one would ship the old
    ``.so`` files (which Python imports in preference to the ``.py`` files), and a module
    since removed or turned into a package would be installed again.
    """

    def run(self) -> None:
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        wanted = {
            os.path.normpath(os.path.join(self.build_lib, *e.name.split("."))) + suffix
            for e in EXT_MODULES
        }
        found = glob.glob(os.path.join(self.build_lib, "*__mypyc" + suffix))
        for top in ("kongtx", "twisted"):
            found += glob.glob(os.path.join(self.build_lib, top, "**", "*"), recursive=True)
        for path in found:
            if not os.path.isfile(path) or "__pycache__" in path:
                continue
            if path.endswith(suffix):
                stale = os.path.normpath(path) not in wanted
            else:
                stale = not os.path.exists(
                    os.path.join(HERE, os.path.relpath(path, self.build_lib))
                )
            if stale:
                os.remove(path)
        super().run()


if __name__ == "__main__":  # pip and setup.py commands; tests import it for its helpers
    setup(ext_modules=EXT_MODULES, cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
