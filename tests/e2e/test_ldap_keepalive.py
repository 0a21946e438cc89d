"""ldap-auth's ``keepalive``: binds reuse idle connections to a real slapd.

The binder is blocking by design (the handler runs it in a thread), so these tests
call it directly against the session's slapd (tests/servers/slapd.py).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from kongtx.plugins.ldap_auth.client import LdapBinder, bind_dn
from tests.servers import slapd


@pytest.fixture(scope="module")
def directory() -> Iterator[slapd.SlapdServer]:
    yield slapd.server()


def _dn(uid: str) -> str:
    return bind_dn("uid", uid, slapd.PEOPLE_DN)


class _Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_binds_reuse_one_connection_within_keepalive(directory: slapd.SlapdServer) -> None:
    binder = LdapBinder(directory.host, directory.port, timeout=5, keepalive=60)
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    assert not binder.bind(_dn("einstein"), "wrong")  # a refusal keeps the connection
    assert binder.bind(_dn("curie"), slapd.USERS["curie"])  # re-bind as someone else
    assert binder.opened == 1
    binder.close()


def test_keepalive_zero_opens_a_connection_per_bind(directory: slapd.SlapdServer) -> None:
    binder = LdapBinder(directory.host, directory.port, timeout=5, keepalive=0)
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    assert binder.opened == 2


def test_an_idle_connection_past_keepalive_is_replaced(directory: slapd.SlapdServer) -> None:
    now = _Now()
    binder = LdapBinder(directory.host, directory.port, timeout=5, keepalive=1.0, now=now)
    assert binder.bind(_dn("tesla"), slapd.USERS["tesla"])
    now.t += 0.5
    assert binder.bind(_dn("tesla"), slapd.USERS["tesla"])
    assert binder.opened == 1
    now.t += 1.5
    assert binder.bind(_dn("tesla"), slapd.USERS["tesla"])
    assert binder.opened == 2
    binder.close()


def test_a_pooled_connection_the_server_dropped_costs_one_retry(
    directory: slapd.SlapdServer,
) -> None:
    binder = LdapBinder(directory.host, directory.port, timeout=5, keepalive=60)
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    ((_, pooled),) = binder._idle
    pooled.socket.shutdown(socket.SHUT_RDWR)  # as if the server had closed it
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    assert binder.opened == 2
    binder.close()


def test_start_tls_connections_are_kept_too(directory: slapd.SlapdServer) -> None:
    binder = LdapBinder(directory.host, directory.port, start_tls=True, timeout=5, keepalive=60)
    assert binder.bind(_dn("curie"), slapd.USERS["curie"])
    assert binder.bind(_dn("einstein"), slapd.USERS["einstein"])
    assert binder.opened == 1
    binder.close()
