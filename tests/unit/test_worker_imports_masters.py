"""A proxy worker never imports the masters' modules (issue 8: memory per worker).

``python -m kongtx.workers N`` imports the ``kongtx.workers`` package first: its
exports are imported by their first use (PEP 562), so a worker loads neither the
worker pool, the proxy-only master nor the node's workers service, nor
twisted.application (Service, the proxy's listener services: only a node or a
master builds them).  Each check runs in a fresh interpreter.
"""

from __future__ import annotations

from test_worker_imports import run

MASTERS = (
    "kongtx.workers.master",
    "kongtx.workers.proxy_master",
    "kongtx.workers.service",
    "twisted.application",
    "automat",  # twisted.application's client service
)


def test_a_worker_imports_no_masters_module() -> None:
    run(
        "from kongtx.workers.worker import serve_worker\n"
        "import kongtx.proxy.service\n"
        f"loaded = [m for m in {MASTERS!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )


def test_the_package_still_exports_every_name() -> None:
    """``from kongtx.workers import X`` works for every name of ``__all__``, importing
    X's module then (and a name it does not export is an AttributeError)."""
    run(
        "import kongtx.workers as workers\n"
        "assert 'kongtx.workers.master' not in sys.modules\n"
        "from kongtx.workers import WorkerPool, fan_out\n"
        "from kongtx.workers.master import WorkerPool as pool, fan_out as fan\n"
        "assert WorkerPool is pool and fan_out is fan\n"
        "for name in workers.__all__:\n"
        "    getattr(workers, name)\n"
        "from kongtx.workers.service import ProxyWorkers\n"
        "assert workers.ProxyWorkers is ProxyWorkers\n"
        "try:\n"
        "    workers.nothing_here\n"
        "except AttributeError as e:\n"
        "    assert 'nothing_here' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )


def test_the_proxy_listener_services_import_what_they_need() -> None:
    run(
        "from types import SimpleNamespace\n"
        "from twisted.internet import task\n"
        "from twisted.application.service import IService\n"
        "from kongtx.clock import Clock\n"
        "from kongtx.proxy.service import proxy_service\n"
        "config = SimpleNamespace(client_max_header_size=8192, proxy_frontend='fast',\n"
        "    proxy_listen=SimpleNamespace(host='127.0.0.1', port=0))\n"
        "service = proxy_service(config, None, Clock(task.Clock()), reactor)\n"
        "assert IService.providedBy(service) and not service.running\n"
    )
