"""Fixtures for end-to-end proxy tests (helpers in proxy_support.py).

``kong_node`` is a real ``twistd -n --pidfile= kong`` process of the build
``proxy_support.kongtx_build`` chose (the installed, compiled package when it is this
checkout's code, else the checkout; the header of the run says which),
``KONG_PREFIX`` in a temporary directory, ``KONG_DATABASE=sqlite``
and free 127.0.0.1 ports for every listener; ``upstream`` is the echo upstream of
``echo_upstream.py`` in its own process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from proxy_support import Node, Upstream, kongtx_build, running_node, start_upstream


def pytest_report_header() -> str:
    build = kongtx_build()
    hot_path = f" ({build.hot_path})" if build.installed else ""
    return f"kongtx processes run {build.reason}{hot_path}"


#: The proxy front-ends every ``kong_node`` test runs against (``proxy_frontend``);
#: ``KONG_TEST_FRONTENDS=fast`` narrows a run to one.
FRONTENDS = [f for f in os.environ.get("KONG_TEST_FRONTENDS", "fast,web").split(",") if f]


@pytest.fixture(scope="module", params=FRONTENDS)
def kong_node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """One node per test module and front-end (upstream timeouts short enough for timeout tests)."""
    with running_node(
        {
            "KONG_UPSTREAM_READ_TIMEOUT": "1500",
            "KONG_UPSTREAM_SEND_TIMEOUT": "1500",
            "KONG_UPSTREAM_CONNECT_TIMEOUT": "1500",
            "KONG_PROXY_FRONTEND": request.param,
        }
    ) as node:
        yield node


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """The echo upstream (HTTP, HTTPS, WebSocket) in its own process."""
    started = start_upstream()
    process = started.process
    try:
        yield started
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
