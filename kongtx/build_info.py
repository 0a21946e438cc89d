"""Which build of kongtx runs: the proxy hot path compiled with mypyc, or pure Python.

``setup.py`` compiles the modules of :data:`HOT_PATH` with mypyc (issue 8) into C
extensions installed next to their ``.py`` files; Python imports an extension in
preference to its source, so an installed compiled build runs them as C.  The
checkout itself always stays pure (no ``.so`` in it: tests/unit/test_build_info.py).

:func:`describe` says which build this process runs (the node logs it once at start;
``bench/run`` and ``bench/cpu`` print it).  :func:`installed_build` tells the e2e
harness and the benchmarks whether the package installed in an interpreter's
site-packages is the checkout's current code (same ``.py`` files, same bytes), so
that they run the installed, compiled build only when it is not stale.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: The modules a proxied request runs through, compiled by setup.py, leaves first.
#: kongtx.cache is compiled: its peek runs several times per request (workers/master.fan_out
#: reaches the workers through its invalidation listeners, not by replacing its methods);
#: so is kongtx.cache_entries, the entry forms that peek reads on every hit.
#: Of the plugin layer, the chain and the benchmark's plugins (key-auth, rate-limiting,
#: udp-log) and the log serializer are compiled; the bases other code subclasses
#: (plugins.base, auth_common, ratelimit_*, log_transports.common) stay pure: interpreted
#: code cannot subclass a compiled class, and a compiled base would call their overrides.
HOT_PATH: tuple[str, ...] = (
    "kongtx.cache_entries",
    "kongtx.cache",
    "kongtx.balancer.registry",
    "kongtx.proxy.body_pipe",
    "kongtx.proxy.direct_write",
    "kongtx.router",
    "kongtx.proxy.headers",
    "kongtx.proxy.query",
    "kongtx.proxy.request",
    "kongtx.proxy.upstream_request",
    "kongtx.proxy.upstream_parsing",
    "kongtx.proxy.upstream_response",
    "kongtx.proxy.incoming",
    "kongtx.proxy.context",
    "kongtx.proxy.connection",
    "kongtx.proxy.exchange",
    "kongtx.proxy.upstream",
    "kongtx.proxy.upstream_tls",
    "kongtx.proxy.balanced",
    "kongtx.proxy.respond",
    "kongtx.proxy.log_phase",
    "kongtx.proxy.upgrade",
    "kongtx.proxy.express",
    "kongtx.proxy.pipeline",
    "kongtx.proxy.fast_parsing",
    "kongtx.proxy.fast_writing",
    "kongtx.proxy.fast_connection",
    "kongtx.plugins.row_json",
    "kongtx.plugins.log_tables",
    "kongtx.plugins.log_serializer",
    "kongtx.plugins.ratelimit_table",
    "kongtx.plugins.counter_slots",
    "kongtx.plugins.key_auth.handler",
    "kongtx.plugins.rate_limiting.handler",
    "kongtx.plugins.udp_log.handler",
    "kongtx.plugins.entries",
    "kongtx.plugins.chain",
    "kongtx.plugins.runtime",
    "kongtx.turn_end",
    "kongtx.reactor",
)

#: The kongtx/proxy/ modules left pure on purpose (set up once, or not per request); a
#: new proxy module must be in one list or the other.
PURE_PROXY: tuple[str, ...] = (
    "kongtx.proxy",
    "kongtx.proxy.errors",
    "kongtx.proxy.fast",
    "kongtx.proxy.http",
    "kongtx.proxy.resource",
    "kongtx.proxy.service",
    "kongtx.proxy.tls",
    "kongtx.proxy.tunnel",
)

#: What the installed package is compared on, relative to the directory holding ``kongtx``
#: (site-packages or a checkout): every ``kongtx/**/*.py`` and the twistd plugin.
PLUGIN_FILE = "twisted/plugins/kong_plugin.py"

#: Printed by a process started from outside any checkout: where ``import kongtx`` finds it.
_PROBE = (
    "import json, os\n"
    "try:\n"
    "    import kongtx\n"
    "except ImportError:\n"
    "    print(json.dumps(None))\n"
    "else:\n"
    "    print(json.dumps(os.path.dirname(os.path.dirname(os.path.abspath(kongtx.__file__)))))\n"
)
_DESCRIBE = "from kongtx.build_info import describe; print(describe())"


def source_file(module: str) -> str:
    """``kongtx.proxy.pipeline`` -> ``kongtx/proxy/pipeline.py``."""
    return module.replace(".", "/") + ".py"


def compiled_modules() -> list[str]:
    """The :data:`HOT_PATH` modules this process runs compiled (imported from an extension)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in HOT_PATH:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith(suffixes):
            found.append(name)
    return found


def describe() -> str:
    """One line: how much of the hot path this process runs compiled."""
    compiled = compiled_modules()
    if not compiled:
        return "hot path: pure Python"
    if len(compiled) == len(HOT_PATH):
        return f"hot path compiled with mypyc: {len(compiled)} modules"
    pure = ", ".join(name for name in HOT_PATH if name not in compiled)
    return (
        f"hot path compiled with mypyc: {len(compiled)} of {len(HOT_PATH)} modules (pure: {pure})"
    )


def source_digest(root: str) -> str:
    """A sha256 over the relative paths and bytes of the sources under ``root``."""
    base = Path(root)
    files = sorted(p.relative_to(base).as_posix() for p in (base / "kongtx").rglob("*.py"))
    digest = hashlib.sha256()
    for rel in [*files, PLUGIN_FILE]:
        path = base / rel
        data = path.read_bytes() if path.is_file() else b"\0missing"
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Build:
    """Which kongtx the processes started by a test session or a benchmark run."""

    #: ``installed`` (site-packages, from outside the checkout) or ``checkout`` (PYTHONPATH)
    kind: str
    #: why, in one line
    reason: str
    #: :func:`describe` in the installed package (installed builds only)
    hot_path: str = ""

    @property
    def installed(self) -> bool:
        return self.kind == "installed"


@cache
def installed_build(checkout: str, python: str, forced: str = "") -> Build:
    """Whether processes of ``python`` should run its installed kongtx or ``checkout``'s.

    The installed package is used when its sources are the checkout's (same files,
    same bytes: :func:`source_digest`); ``forced`` (``installed`` or ``checkout``,
    e.g. from ``KONG_TEST_BUILD``) overrides the comparison.  Runs ``python`` from
    outside the checkout once or twice (a subprocess: not for a reactor thread), once
    per process and arguments (the answer is kept).
    """
    if forced not in ("", "installed", "checkout"):
        raise ValueError(f"unknown build {forced!r}: installed or checkout")
    if forced == "checkout":
        return Build("checkout", "the checkout (forced)")
    env = process_env(True, checkout, dict(os.environ))
    outside = os.path.dirname(os.path.realpath(checkout))

    def run(code: str) -> str:
        done = subprocess.run(
            [python, "-c", code],
            env=env,
            cwd=outside,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    root = json.loads(run(_PROBE))
    if root is None:
        reason = "kongtx is not installed"
    elif os.path.realpath(root) == os.path.realpath(checkout):
        reason = "the installed kongtx is this checkout (an editable install)"
    elif forced != "installed" and source_digest(root) != source_digest(checkout):
        reason = f"the kongtx installed in {root} is not this checkout's code (run `make install`)"
    else:
        why = "forced" if forced else "current"
        return Build("installed", f"the installed kongtx in {root} ({why})", run(_DESCRIBE))
    if forced == "installed":
        raise RuntimeError(f"KONG_TEST_BUILD=installed, but {reason}")
    return Build("checkout", f"the checkout, pure Python: {reason}")


def process_env(installed: bool, checkout: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a kongtx process: the checkout first on PYTHONPATH, or (``installed``) not on it."""
    env = dict(env)
    inside = os.path.realpath(checkout)
    kept = [
        entry
        for entry in env.pop("PYTHONPATH", "").split(os.pathsep)
        if entry and os.path.commonpath([inside, os.path.realpath(entry)]) != inside
    ]
    if not installed:
        kept.insert(0, checkout)
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    return env
