"""TLS to the datastore: lua_ssl_trusted_certificate through open_store, and Cassandra's context.

Kong 0.9 verified pg/cassandra certificates (``*_ssl_verify``) against
``lua_ssl_trusted_certificate`` only, the chain and not the server's name.  The factory
refuses, at start, to verify without that file; the Cassandra session's SSL context
is tried here in real handshakes against a local TLS server with certificates from a
throwaway CA (the PostgreSQL side runs on a real server in
tests/store/test_postgres_tls.py).
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import pytest
from twisted.internet import task

from kongtx.clock import Clock
from kongtx.config import ConfigError
from kongtx.config_loading import load_config
from kongtx.store.cassandra.session import ssl_context
from kongtx.store.factory import open_store, trusted_certificate
from kongtx.store.postgres import PostgresStore
from tests.servers.certs import Issued, TestCA


def _config(tmp_path: Any, **env: str) -> Any:
    return load_config(None, {"KONG_PREFIX": str(tmp_path), **env})


def _verifying(tmp_path: Any, backend: str, ca_file: str | None) -> Any:
    """A configuration on ``backend`` with TLS verified against ``ca_file`` (None: unset)."""
    prefix = "PG" if backend == "postgres" else "CASSANDRA"
    env = {"KONG_DATABASE": backend, f"KONG_{prefix}_SSL": "on", f"KONG_{prefix}_SSL_VERIFY": "on"}
    if ca_file is not None:
        env["KONG_LUA_SSL_TRUSTED_CERTIFICATE"] = ca_file
    return _config(tmp_path, **env)


def _open(config: Any) -> Any:
    reactor = task.Clock()
    return open_store(config, reactor, Clock(reactor), "node")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(str(tmp_path_factory.mktemp("ca")))


# --------------------------------------------------------------------------- the factory


@pytest.mark.parametrize("backend,prefix", [("postgres", "pg"), ("cassandra", "cassandra")])
def test_verify_without_a_ca_file_stops_the_start_with_the_keys_to_set(
    tmp_path: Any, backend: str, prefix: str
) -> None:
    """*_ssl_verify on and no lua_ssl_trusted_certificate: a ConfigError naming both keys."""
    with pytest.raises(ConfigError) as caught:
        _open(_verifying(tmp_path, backend, None))
    (line,) = caught.value.errors
    assert line.startswith(f"{prefix}_ssl_verify is on but lua_ssl_trusted_certificate is not set")
    assert ("PostgreSQL" if backend == "postgres" else "Cassandra") in line


def test_a_missing_ca_file_is_named(tmp_path: Any) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(
        ConfigError, match=f"lua_ssl_trusted_certificate: no such file at {missing}"
    ):
        _open(_verifying(tmp_path, "postgres", missing))


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Any) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no usable PEM certificate"):
        _open(_verifying(tmp_path, "cassandra", str(junk)))


def test_the_ca_file_reaches_libpq_as_sslrootcert(tmp_path: Any, ca: TestCA) -> None:
    store = _open(_verifying(tmp_path, "postgres", ca.file))
    assert isinstance(store, PostgresStore)
    assert store._pool.dsn["sslmode"] == "verify-ca"
    assert store._pool.dsn["sslrootcert"] == ca.file


def test_the_ca_file_reaches_the_cassandra_session(tmp_path: Any, ca: TestCA) -> None:
    assert _open(_verifying(tmp_path, "cassandra", ca.file))._driver.ssl_ca == ca.file


@pytest.mark.parametrize(
    "env",
    [
        {},  # no TLS at all
        {"KONG_PG_SSL": "on"},  # TLS, not verified
        {"KONG_PG_SSL_VERIFY": "on"},  # verify without pg_ssl means nothing (as in Kong)
    ],
)
def test_no_ca_file_is_needed_unless_tls_is_verified(tmp_path: Any, env: dict[str, str]) -> None:
    config = _config(tmp_path, KONG_DATABASE="postgres", **env)
    assert trusted_certificate(config, "postgres") is None
    store = _open(config)
    assert "sslrootcert" not in store._pool.dsn


def test_a_ca_file_set_but_unused_is_not_read(tmp_path: Any) -> None:
    """Kong's other TLS settings may name the file; without *_ssl_verify nothing reads it."""
    config = _config(
        tmp_path,
        KONG_DATABASE="postgres",
        KONG_PG_SSL="on",
        KONG_LUA_SSL_TRUSTED_CERTIFICATE=str(tmp_path / "absent.pem"),
    )
    assert _open(config)._pool.dsn["sslmode"] == "require"


# --------------------------------------------------------------------------- Cassandra's context


def _handshake(issued: Issued, context: ssl.SSLContext) -> str | None:
    """Handshake with a one-shot TLS server serving ``issued``; None, or the client's error."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(issued.cert, issued.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            # as cassandra-driver wraps when the context does not check host names
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"x")
        return None
    except ssl.SSLError as e:
        return str(e)
    finally:
        thread.join(10)
        listener.close()


def test_verified_context_accepts_the_cas_certificate(ca: TestCA) -> None:
    context = ssl_context(True, ca.file)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert _handshake(ca.issue("node"), context) is None


def test_verified_context_refuses_another_cas_certificate(ca: TestCA, tmp_path: Any) -> None:
    other = TestCA(str(tmp_path), "other CA")
    error = _handshake(other.issue("stranger"), ssl_context(True, ca.file))
    assert error is not None and "certificate verify failed" in error


def test_verified_context_checks_the_chain_not_the_name(ca: TestCA) -> None:
    """Kong 0.9 (lua-cassandra: ``sslhandshake(false, nil, verify)``) did not check the name."""
    context = ssl_context(True, ca.file)
    assert context.check_hostname is False
    assert _handshake(ca.issue("renamed", ("db.example.invalid",)), context) is None


def test_verified_context_trusts_only_the_ca_file(ca: TestCA) -> None:
    """No system CAs: the one certificate of lua_ssl_trusted_certificate."""
    cas = ssl_context(True, ca.file).get_ca_certs()
    assert [dict(c["subject"][-1])["commonName"] for c in cas] == ["kongtx test CA"]


def test_unverified_context_accepts_any_certificate(tmp_path: Any) -> None:
    stranger = TestCA(str(tmp_path), "stranger CA").issue("any", ("db.example.invalid",))
    context = ssl_context(False, None)
    assert context.verify_mode == ssl.CERT_NONE
    assert _handshake(stranger, context) is None


def test_verified_context_without_a_ca_file_is_an_error() -> None:
    with pytest.raises(ValueError, match="lua_ssl_trusted_certificate"):
        ssl_context(True, None)
