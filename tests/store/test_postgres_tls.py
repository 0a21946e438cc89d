"""PostgresStore over TLS on a real PostgreSQL (``ssl = on``): pg_ssl, pg_ssl_verify, the CA.

The server is tests/servers/postgres.py's ``tls_server()``: a private PostgreSQL of its
own (the session server stays plain) whose certificate, for 127.0.0.1/localhost, is
signed by a throwaway CA.  Verification is Kong 0.9's: the chain against the CA file
(``lua_ssl_trusted_certificate``), not the server's name.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet.task import Clock as FakeReactorTime

from kongtx.clock import Clock
from kongtx.store.interface import StoreUnavailable
from kongtx.store.migrations import load_migrations
from kongtx.store.postgres import PostgresStore
from kongtx.store.tables import IDENTIFIERS, TABLES
from tests.reactor_thread import reactor, run
from tests.servers import postgres as pg
from tests.servers.certs import TestCA
from tests.store.helpers import Rows

MIGRATIONS = load_migrations("postgres", IDENTIFIERS)


@pytest.fixture
def server() -> Iterator[pg.PostgresServer]:
    """A fresh database on the TLS server, dropped afterwards."""
    srv = pg.fresh_database(pg.tls_server(), "ktls_" + uuid.uuid4().hex[:12])
    try:
        yield srv
    finally:
        pg.drop_database(srv)


def _store(srv: pg.PostgresServer, **kw: Any) -> PostgresStore:
    real = reactor()
    return PostgresStore(
        **srv.store_kwargs(), **kw, tables=TABLES, origin="node-a", clock=Clock(real), reactor=real
    )


async def _on_tls(store: PostgresStore) -> bool:
    """Whether the store's own connection to the server is encrypted (pg_stat_ssl)."""

    async def txn(t: Any) -> bool:
        rows = await t.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return bool(rows[0][0])

    return await store._run(txn)


def test_verified_tls_with_the_operators_ca_migrates_writes_and_reads(
    server: pg.PostgresServer,
) -> None:
    """pg_ssl + pg_ssl_verify + the CA that signed the server's certificate: the store works."""
    store = _store(server, ssl=True, ssl_verify=True, ssl_ca=server.ca_file)
    run(store.start())
    try:
        assert run(_on_tls(store)) is True
        assert run(store.migrate(MIGRATIONS))
        api = Rows().api(name="over-tls")
        run(store.insert("apis", api))
        assert run(store.get("apis", {"id": api["id"]}))["name"] == "over-tls"
    finally:
        run(store.stop())


def test_a_certificate_from_another_ca_is_refused(server: pg.PostgresServer, tmp_path: Any) -> None:
    """A CA file that did not sign the server's certificate: StoreUnavailable, nothing sent."""
    other = TestCA(str(tmp_path), "another CA")
    store = _store(server, ssl=True, ssl_verify=True, ssl_ca=other.file)
    with pytest.raises(StoreUnavailable) as caught:
        run(store.start())
    run(store.stop())
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL")
    assert "certificate verify failed" in message


def test_tls_without_verification_needs_no_ca(server: pg.PostgresServer) -> None:
    """pg_ssl alone: encrypted, the certificate not checked, no CA file needed."""
    store = _store(server, ssl=True)
    run(store.start())
    try:
        assert run(_on_tls(store)) is True
    finally:
        run(store.stop())


def test_without_pg_ssl_the_connection_is_plain(server: pg.PostgresServer) -> None:
    """pg_ssl off on a server that offers TLS: sslmode=disable, a plain connection."""
    store = _store(server)
    run(store.start())
    try:
        assert run(_on_tls(store)) is False
    finally:
        run(store.stop())


def test_the_server_name_is_not_checked_as_in_kong(
    server: pg.PostgresServer, tmp_path: Any
) -> None:
    """Kong 0.9 checked the chain only: a certificate for another name, from the CA, is accepted.

    The server's certificate files are replaced by one for ``db.example.invalid`` signed
    by a new CA and the server reloads them (SIGHUP); the originals come back after.
    """
    assert server.ssl_files is not None
    ca = TestCA(str(tmp_path), "renamed CA")
    issued = ca.issue("renamed", ("db.example.invalid",))
    cert, key = server.ssl_files
    saved = {path: open(path, "rb").read() for path in (cert, key)}
    try:
        for src, dst in ((issued.cert, cert), (issued.key, key)):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
        server._pg_ctl("reload")
        assert _wait_for_subject(server, "db.example.invalid")
        store = _store(server, ssl=True, ssl_verify=True, ssl_ca=ca.file)
        run(store.start())
        try:
            assert run(_on_tls(store)) is True
        finally:
            run(store.stop())
    finally:
        for path, data in saved.items():
            with open(path, "wb") as g:
                g.write(data)
        server._pg_ctl("reload")
        assert _wait_for_subject(server, "127.0.0.1")


def _presented_subject(server: pg.PostgresServer) -> str:
    """The common name of the certificate the server presents (SSLRequest, then a handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value)


def _wait_for_subject(server: pg.PostgresServer, common_name: str) -> bool:
    """A reload is asynchronous: wait (5 s at most) until the server presents ``common_name``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _presented_subject(server) == common_name:
            return True
        time.sleep(0.1)
    return False


def test_verification_without_a_ca_file_is_refused_before_connecting() -> None:
    """No CA file with pg_ssl_verify: a ValueError at construction, not libpq's default root.crt."""
    clock = Clock(FakeReactorTime())
    with pytest.raises(ValueError, match="lua_ssl_trusted_certificate"):
        PostgresStore(
            tables=TABLES, origin="n", clock=clock, reactor=None, ssl=True, ssl_verify=True
        )
