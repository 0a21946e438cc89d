"""Small in-memory stand-ins for unit tests of plugins and the plugin runtime.

``FakeContext`` implements :class:`kongtx.plugins.base.RequestContext` the way the
proxy does (case-insensitive multi-valued headers, a request body the plugins may
read and replace, ``respond`` that ends the request), without any I/O, so a plugin
phase can be called directly and its effects asserted.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import succeed

from kongtx.plugins.base import Headers
from kongtx.store.interface import Row


class FakeHeaders:
    """Ordered, case-insensitive, multi-valued headers (the ``Headers`` protocol)."""

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        if isinstance(items, Mapping):
            items = list(items.items())
        self._items: list[tuple[str, str]] = list(items)

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def set(self, name: str, value: str) -> None:
        lname = name.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for k, v in self._items:
            if k.lower() == lname:
                if not placed:
                    out.append((name, value))
                    placed = True
            else:
                out.append((k, v))
        if not placed:
            out.append((name, value))
        self._items = out

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        lname = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))


class FakeContext:
    """A proxied request as plugins see it; records what plugins did to it."""

    def __init__(
        self,
        api: Row | None = None,
        method: str = "GET",
        path: str = "/",
        scheme: str = "http",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        query: Iterable[tuple[str, str | None]] = (),
        body: bytes = b"",
        client_ip: str = "127.0.0.1",
    ) -> None:
        self.api: Row = api if api is not None else {"id": "api-1", "name": "test"}
        self.method = method
        self.scheme = scheme
        self.path = path
        self.query: list[tuple[str, str | None]] = list(query)
        self.headers: Headers = FakeHeaders(headers)
        self.client_ip = client_ip
        self.server_addr = "10.0.0.1"
        self.server_port = 8000
        self.connection_id = 7
        self.connection_requests = 3
        self.started_at = 1_480_000_000.25
        self.shared: dict[str, Any] = {}
        self.consumer: Row | None = None
        self.credential: Row | None = None
        self.status = 200
        self.response_headers: Headers = FakeHeaders()
        self.body = body
        self.body_reads = 0
        self.upstream_host: str | None = None
        #: (status, body, headers) of the Kong-generated response, if any
        self.response: tuple[int, Mapping[str, Any] | bytes | None, dict[str, str]] | None = None

    async def read_body(self) -> bytes:
        self.body_reads += 1
        # a real proxy may wait for the client here: make the fake wait too
        return await succeed(self.body)

    def set_body(self, body: bytes) -> None:
        self.body = body
        self.headers.set("Content-Length", str(len(body)))

    def set_upstream_host(self, host: str) -> None:
        self.upstream_host = host

    def respond(
        self,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        assert self.response is None, "responded twice"
        self.response = (status, body, dict(headers or {}))
        self.status = status
        for name, value in (headers or {}).items():
            self.response_headers.set(name, value)

    @property
    def responded(self) -> bool:
        return self.response is not None

    def json_body(self) -> Any:
        """The request body (as plugins left it) parsed as JSON."""
        return json.loads(self.body)


class FakeCertificateContext:
    """The certificate phase's context: a TLS handshake with SNI."""

    def __init__(self, sni: str, api: Row) -> None:
        self.sni = sni
        self.api = api
        self.chosen: tuple[bytes, bytes] | None = None

    def set_certificate(self, cert_der: bytes, key_der: bytes) -> None:
        self.chosen = (cert_der, key_der)


class FakePluginRows:
    """The DAO as the plugin runtime sees it: ``find_all`` over a list of rows.

    Counts queries so tests can prove what is cached; ``fail`` makes the next
    queries raise, like a datastore that went away.
    """

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self.rows: list[Row] = [dict(r) for r in rows]
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    async def find_all(self, collection: str, filters: Mapping[str, Any]) -> list[Row]:
        self.queries.append((collection, dict(filters)))
        if self.fail is not None:
            raise self.fail
        assert collection == "plugins"
        return [dict(row) for row in self.rows if all(row.get(k) == v for k, v in filters.items())]


class FakeRegistry:
    """A plugin registry holding the given specs (a list the test may still extend)."""

    def __init__(self, specs: list[Any]) -> None:
        self._specs = specs

    def specs(self) -> list[Any]:
        return sorted(self._specs, key=lambda s: -s.priority)

    def get(self, name: str) -> Any:
        for spec in self._specs:
            if spec.name == name:
                return spec
        return None

    def names(self) -> list[str]:
        return sorted(s.name for s in self._specs)


def plugin_row(
    name: str,
    api_id: str | None = None,
    consumer_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    enabled: bool = True,
    row_id: str | None = None,
) -> Row:
    """A ``plugins`` row with every column."""
    return {
        "id": row_id or f"{name}:{api_id}:{consumer_id}",
        "name": name,
        "api_id": api_id,
        "consumer_id": consumer_id,
        "config": dict(config or {}),
        "enabled": enabled,
        "created_at": 1_480_000_000_000,
    }


def self_signed_certificate(host: str = "ssl.example.com") -> tuple[str, str, bytes, bytes]:
    """(cert PEM, key PEM, cert DER, key DER) of a throwaway EC certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem.decode(),
        cert.public_bytes(serialization.Encoding.DER),
        key_der,
    )
