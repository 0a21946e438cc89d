"""What a proxy worker does not import until it needs it (issue 8: memory per worker).

Each check runs in a fresh interpreter: this test process has imported everything.
"""

from __future__ import annotations

import subprocess
import sys

#: what ``python -m kongtx.workers N`` imports before serving (kongtx.workers.worker)
WORKER_IMPORTS = (
    "import sys\n"
    "from twisted.internet import reactor\n"
    "import kongtx.workers.__main__\n"
    "from kongtx.plugins.registry import PluginRegistry\n"
    "from kongtx.proxy.service import build_pipeline, make_proxy_factory\n"
    "from kongtx.store.factory import open_store\n"
    "from kongtx.dao import DAO\n"
    "registry = PluginRegistry.load([])\n"
)


def run(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS + code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_bundled_handlers_are_imported_by_their_first_use() -> None:
    """The registry knows which plugins have a handler without importing any."""
    run(
        "handlers = [m for m in sys.modules if m.startswith('kongtx.plugins.')"
        " and m.endswith('.handler')]\n"
        "assert not handlers, handlers\n"
        "assert 'jwt' not in sys.modules\n"
        "spec = registry.get('jwt')\n"
        "assert spec.has_handler and spec.handler is None\n"
        "from kongtx.plugins.jwt.handler import Handler\n"
        "assert spec.load_handler() is Handler and spec.handler is Handler\n"
        "assert 'jwt' in sys.modules\n"
        "assert registry.get('key-auth').has_handler\n"
    )


def test_dns_client_is_imported_by_the_first_query() -> None:
    """twisted.names is loaded when a target name is first resolved, not at start."""
    run(
        "from twisted.internet import task\n"
        "from kongtx.balancer.dns import TargetResolver\n"
        "from kongtx.clock import Clock\n"
        "resolver = TargetResolver(task.Clock(), Clock(task.Clock()), [('127.0.0.1', 9)])\n"
        "assert 'twisted.names' not in sys.modules\n"
        "assert resolver._names() is resolver._names()\n"
        "assert 'twisted.names.client' in sys.modules\n"
    )


def test_twisted_web_server_is_imported_only_by_the_web_front_end() -> None:
    """A worker on the fast front-end never loads twisted.web's server (~2.8 MB)."""
    run(
        "from types import SimpleNamespace\n"
        "from twisted.internet import task\n"
        "from kongtx.clock import Clock\n"
        "from kongtx.proxy.fast import FastProxyFactory\n"
        "config = SimpleNamespace(client_max_header_size=8192, proxy_frontend='fast')\n"
        "clock = Clock(task.Clock())\n"
        "factory = make_proxy_factory(config, None, clock)\n"
        "assert isinstance(factory, FastProxyFactory)\n"
        "assert 'twisted.web.server' not in sys.modules\n"
        "assert 'twisted.web.http' not in sys.modules\n"
        "web = make_proxy_factory(SimpleNamespace(**{**config.__dict__, 'proxy_frontend': 'web'}), None, clock)\n"
        "assert 'twisted.web.server' in sys.modules\n"
    )
