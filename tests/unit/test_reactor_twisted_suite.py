"""Twisted's own reactor tests (TCP, TLS, UDP, UNIX, FD sets, threads, time, core), run against kongtx's reactor.

``ReactorBuilder`` builds one test case class per reactor it is told about
(``_reactors``): each class below names only :class:`kongtx.reactor.LeanReactor`, so
these are Twisted's tests of connections, ports, half-close, aborts, TLS, datagrams,
the reader/writer sets, calls from threads, timed calls and system events, on the reactor the node runs.  Two tests are left out
(``_LEFT_OUT``): one reads the legacy log context the reactor no longer sets, the
other Twisted skips for its own epoll reactor.
"""

from __future__ import annotations

import sys
import unittest
from typing import Any

import pytest

if sys.platform != "linux":  # pragma: no cover
    pytest.skip("kongtx's reactor needs epoll", allow_module_level=True)

pytest.importorskip("hamcrest", reason="Twisted's test_tcp needs PyHamcrest (the test extra)")

from twisted.internet.test import (
    test_core,
    test_fdset,
    test_tcp,
    test_threads,
    test_time,
    test_tls,
    test_udp,
    test_unix,
)

LEAN = ["kongtx.reactor.LeanReactor"]

_BUILDERS: list[Any] = [
    test_tcp.TCP4ClientTestsBuilder,
    test_tcp.TCP6ClientTestsBuilder,
    test_tcp.TCPPortTestsBuilder,
    test_tcp.TCPFDPortTestsBuilder,
    test_tcp.TCPConnectionTestsBuilder,
    test_tcp.TCP4ConnectorTestsBuilder,
    test_tcp.TCP6ConnectorTestsBuilder,
    test_tcp.TCPTransportTestsBuilder,
    test_tcp.AdoptStreamConnectionTestsBuilder,
    test_tcp.AbortConnectionTests,
    test_tls.SSLClientTestsMixin,
    test_tls.StartTLSClientTestsMixin,
    test_tls.TLSPortTestsBuilder,
    test_tls.AbortSSLConnectionTests,
    test_udp.UDPServerTestsBuilder,
    test_unix.UNIXTestsBuilder,
    test_unix.UNIXPortTestsBuilder,
    test_unix.UnixClientTestsBuilder,
    test_fdset.ReactorFDSetTestsBuilder,
    test_threads.ThreadTestsBuilder,
    test_time.TimeTestsBuilder,
    test_core.SystemEventTestsBuilder,
]


def _skipped(reason: str) -> Any:
    def test(self: Any) -> None:
        raise unittest.SkipTest(reason)

    return test


#: tests left out, and why
_LEFT_OUT = {
    # what the reactor leaves out on purpose: the legacy log context per event
    "test_logPrefix": _skipped(
        "kongtx's reactor sets no legacy log context (ILogContext 'system') around "
        "doRead/doWrite: see kongtx/reactor.py"
    ),
    # Twisted skips it for EPollReactor by class name: epoll drops a closed descriptor
    "test_lostFileDescriptor": _skipped("epoll cannot detect lost file descriptors"),
}

for _builder in _BUILDERS:
    _overrides: dict[str, Any] = {"_reactors": LEAN}
    _overrides.update({name: t for name, t in _LEFT_OUT.items() if hasattr(_builder, name)})
    _lean = type("Lean" + _builder.__name__, (_builder,), _overrides)
    globals().update(_lean.makeTestCaseClasses())
