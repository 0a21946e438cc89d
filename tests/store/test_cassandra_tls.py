"""The Cassandra store over TLS on a real Cassandra 5.0 (cassandra_ssl, _verify, the CA).

The server is tests/servers/cassandra.py's ``tls_server()``: a second private node whose
native port speaks TLS only (``PEMBasedSslContextFactory``), with a certificate for
127.0.0.1/localhost signed by a throwaway CA.  The store is built from a configuration
by kongtx.store.factory, as a node builds it, so lua_ssl_trusted_certificate's way to
the driver is part of what is tested.
"""

from __future__ import annotations

from typing import Any

import pytest

from kongtx.clock import Clock
from kongtx.config_loading import load_config
from kongtx.store.factory import open_store
from kongtx.store.interface import StoreUnavailable
from tests.reactor_thread import reactor, run
from tests.servers import cassandra as cs
from tests.servers.certs import TestCA


@pytest.fixture(scope="module")
def server() -> cs.CassandraServer:
    return cs.tls_server()


def _open(srv: cs.CassandraServer, tmp_path: Any, **env: str) -> Any:
    config = load_config(
        None,
        {
            "KONG_PREFIX": str(tmp_path),
            "KONG_DATABASE": "cassandra",
            "KONG_CASSANDRA_CONTACT_POINTS": srv.host,
            "KONG_CASSANDRA_PORT": str(srv.port),
            "KONG_CASSANDRA_TIMEOUT": "20000",
            "KONG_CASSANDRA_SSL": "on",
            **env,
        },
    )
    real = reactor()
    return open_store(config, real, Clock(real), "node-a")


def _release_version(store: Any) -> str:
    rows = run(store._driver.rows("SELECT release_version FROM system.local"), timeout=60)
    return str(rows[0][0])


def test_verified_tls_with_the_operators_ca_works(
    server: cs.CassandraServer, tmp_path: Any
) -> None:
    """cassandra_ssl + cassandra_ssl_verify + the CA that signed the node's certificate."""
    assert server.ca_file is not None
    store = _open(
        server,
        tmp_path,
        KONG_CASSANDRA_SSL_VERIFY="on",
        KONG_LUA_SSL_TRUSTED_CERTIFICATE=server.ca_file,
    )
    run(store.start(), timeout=60)
    try:
        assert _release_version(store).startswith("5.0")
        run(store.ping(), timeout=60)
    finally:
        run(store.stop(), timeout=60)


def test_a_certificate_from_another_ca_is_refused(
    server: cs.CassandraServer, tmp_path: Any
) -> None:
    """Another CA file: StoreUnavailable naming Cassandra and the failed verification."""
    other = TestCA(str(tmp_path / "other"), "another CA")
    store = _open(
        server,
        tmp_path,
        KONG_CASSANDRA_SSL_VERIFY="on",
        KONG_LUA_SSL_TRUSTED_CERTIFICATE=other.file,
    )
    with pytest.raises(StoreUnavailable) as caught:
        run(store.start(), timeout=60)
    run(store.stop(), timeout=60)
    message = str(caught.value)
    assert message.startswith("cannot connect to Cassandra")
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message


def test_tls_without_verification_needs_no_ca(server: cs.CassandraServer, tmp_path: Any) -> None:
    """cassandra_ssl alone: encrypted, not verified, no CA file."""
    store = _open(server, tmp_path)
    run(store.start(), timeout=60)
    try:
        assert _release_version(store).startswith("5.0")
    finally:
        run(store.stop(), timeout=60)
