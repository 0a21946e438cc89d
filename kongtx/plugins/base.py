# -*- test-case-name: tests.unit.test_plugin_runtime -*-
"""What a plugin sees of a request, and the phases it may implement.

Plugins depend on this module only, never on kongtx.proxy: the proxy (whichever
HTTP front-end serves it) implements :class:`RequestContext`, and the plugin
runtime calls the phases of :class:`BasePlugin` in priority order (SPEC §4.1).

Why phases return ``None`` *or* an awaitable: on the hot path every lookup hits
the cache, and a plain method call costs no Deferred.  A phase that must wait (a
cache miss, a datastore or LDAP call) returns a coroutine; the runtime awaits it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from kongtx.store.interface import RowView

#: A phase's result: nothing, or something to await before the next plugin runs.
PhaseResult = Awaitable[None] | None


class Headers(Protocol):
    """Case-insensitive, multi-valued header access (names compared lower-cased)."""

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or ``None``."""

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order ([] when absent)."""

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with ``value``."""

    def add(self, name: str, value: str) -> None:
        """Append one more value of ``name``."""

    def remove(self, name: str) -> None:
        """Drop every value of ``name``."""

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order, names as received."""


class RequestContext(Protocol):
    """One proxied request as plugins see it, through every phase.

    Request-side attributes describe what will be sent upstream: plugins in the
    access phase change ``headers``, ``query`` or the body, and the proxy builds
    the upstream request from them afterwards (SPEC §3.2).
    """

    #: The matched API row (SPEC §2.1).
    api: RowView
    #: Client request.
    method: str
    scheme: str  # "http" or "https"
    #: Raw request URI path (percent-encoding untouched, no query string).
    path: str
    #: Query arguments in order; a bare flag has the value ``None``.
    query: list[tuple[str, str | None]]
    #: Headers to send upstream (starts as the client's headers).
    headers: Headers
    #: Client IP after ``trusted_ips`` handling (SPEC differences table).
    client_ip: str
    #: Where the request arrived (nginx's ``$server_addr``/``$server_port``), the
    #: connection's serial number and how many requests it carried so far, this one
    #: included (``$connection``/``$connection_requests``): correlation-id's tracker.
    server_addr: str
    server_port: int
    connection_id: int
    connection_requests: int
    #: When the request arrived, epoch seconds on the node's clock (``ngx.req.start_time``).
    started_at: float
    #: Per-request scratch space shared by plugins (Kong's ``ngx.ctx``).
    shared: dict[str, Any]
    #: Set by auth plugins (SPEC §4.1): the consumer row and the credential row.
    consumer: RowView | None
    credential: RowView | None
    #: Response side, valid from header_filter on.
    status: int
    response_headers: Headers

    async def read_body(self) -> bytes:
        """The whole request body (buffers it; only plugins that need it call this)."""

    def set_body(self, body: bytes) -> None:
        """Replace the request body sent upstream (Content-Length is fixed up)."""

    def set_upstream_host(self, host: str) -> None:
        """Override the ``Host`` sent upstream (request-transformer's Host rule)."""

    def respond(
        self,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """End the request here with a Kong-generated response (SPEC §4.1 short-circuit).

        A mapping body is sent as JSON; ``None`` sends an empty body.  Plugins after
        this one in priority order do not run their access phase.
        """

    @property
    def responded(self) -> bool:
        """True once a plugin (or the proxy) produced the response itself."""


class CertificateContext(Protocol):
    """A TLS handshake whose SNI named an API, as the certificate phase sees it (SPEC §3.6).

    The SNI callback of a TLS server cannot wait, so this phase is synchronous: a
    plugin picks a certificate it prepared when it was built.
    """

    #: The server name the client sent.
    sni: str
    #: The API whose ``request_host`` equals ``sni``.
    api: RowView

    def set_certificate(self, cert_der: bytes, key_der: bytes) -> None:
        """Serve this DER certificate and private key instead of the default one."""


@dataclass(frozen=True)
class PluginServices:
    """The node-wide parts a handler may use beyond its own config.

    Handed to every handler by the runtime, so plugins reach consumers and
    credentials (``dao``, through the ``cache``), time (``clock``) and the network
    (``reactor``) without importing the proxy or the node.
    """

    #: kongtx.dao.DAO: consumer and credential lookups.
    dao: Any
    #: kongtx.cache.Cache: the node cache (credentials under SPEC §7.4's keys).
    cache: Any
    #: kongtx.clock.Clock: the node's one timer owner.
    clock: Any
    #: The reactor, for outbound connections (log receivers, LDAP, Redis).
    reactor: Any = None
    #: kongtx.config.Config: the node's configuration (trusted_ips...).
    node_config: Any = None


class BasePlugin:
    """Base of every request-time plugin handler.

    A handler is built once per plugin configuration (``config`` is the validated
    ``config`` column), so per-config work (compiling regexes, parsing CIDRs)
    belongs in ``__init__``, never in a phase.  Override only the phases you need.
    """

    #: Priority order, highest first (SPEC §4.1); copied from the PluginSpec.
    PRIORITY: ClassVar[int] = 0

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        self.config = config
        self.services = services

    def certificate(self, ctx: CertificateContext) -> None:
        """TLS handshake with SNI (only the ssl plugin implements it); cannot wait."""
        return None

    def access(self, ctx: RequestContext) -> PhaseResult:
        """Before the request goes upstream; may ``ctx.respond(...)`` to stop it."""
        return None

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        """Upstream (or Kong-generated) response headers are known; may edit them."""
        return None

    def body_filter(self, ctx: RequestContext, chunk: bytes, last: bool) -> bytes:
        """Each response body chunk on its way to the client; returns what to send."""
        return chunk

    def log(self, ctx: RequestContext) -> PhaseResult:
        """After the response was sent; must never delay or fail the client."""
        return None
