"""Throwaway database servers for the store tests, one per test session.

Why here and not in CI scripts: ``make test`` must be able to run on a developer's
machine as well as in CI, so the harness itself starts (and removes) a private
PostgreSQL and Cassandra on free 127.0.0.1 ports.  Installing the binaries and jars is
``.ci/install-servers``' job; the harness never downloads.  When a server cannot be
started the tests that need it are skipped loudly, unless ``KONG_TEST_REQUIRE`` names the
backend (``KONG_TEST_REQUIRE=postgres,cassandra`` in CI), which turns the skip into a
failure.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar

import pytest

# one port book for every server and node of the run (re-exported)
from tests.harness import free_port as free_port


def required(backend: str) -> bool:
    """Whether ``KONG_TEST_REQUIRE`` makes ``backend`` mandatory."""
    names = os.environ.get("KONG_TEST_REQUIRE", "")
    return backend in {n.strip().lower() for n in names.split(",") if n.strip()}


def unavailable(backend: str, reason: str) -> NoReturn:
    """Skip (loudly) or fail, depending on ``KONG_TEST_REQUIRE``."""
    message = f"{backend} server unavailable: {reason}"
    print(f"\n*** {message}", file=sys.stderr)
    if required(backend):
        pytest.fail(f"{message} (KONG_TEST_REQUIRE={os.environ.get('KONG_TEST_REQUIRE')})")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.2,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll ``predicate`` until true, ``timeout`` elapsed, or ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if not alive():
            return False
        time.sleep(interval)
    return predicate()


class _Destroyable(Protocol):
    def destroy(self) -> None: ...


S = TypeVar("S", bound=_Destroyable)


def once(slot: list[S], guard: threading.Lock, start: Callable[[], S]) -> S:
    """``slot``'s server, started by ``start()`` on the first call and destroyed at exit.

    For the opt-in servers (``tls_server()``) that only some tests start: a failed
    start raises (skips) and is tried again by the next caller.
    """
    with guard:
        if not slot:
            srv = start()
            atexit.register(srv.destroy)
            slot.append(srv)
        return slot[0]
