# -*- test-case-name: tests.unit.test_balancer_health -*-
"""The active health checks' probe: one HTTP/1.0 ``GET``, a TLS handshake, or a bare connect.

Probes use a tiny client of their own rather than the proxy's pooled one: a
probe must never reuse a kept-alive connection (that would prove nothing about
accepting new ones) and has to tell a refused connect, a timeout and a status
apart, which is all it reads.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTCP, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure

from kongtx.balancer.health_rules import Outcome
from kongtx.clock import Clock

#: how many bytes a probe reads looking for the status line before giving up
MAX_STATUS_LINE = 8192
_STATUS_LINE = re.compile(rb"^HTTP/\d\.\d (\d{3})(?: |\r?$)")

#: ``prober(ip, port, host, active_rules) -> Outcome``: what the active checker calls
Prober = Callable[[str, int, str, Mapping[str, Any]], Awaitable[Outcome]]


class _ProbeProtocol(TxProtocol):
    """Send one request, read the status line, hang up (as lua-resty-healthcheck: a plain
    close once the status is known; an abort when the probe failed or was cancelled)."""

    def __init__(self, request: bytes, status: Deferred[int]) -> None:
        self.request = request
        self.status = status
        self.buffer = b""
        self.closed = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.status.called:
            return
        self.buffer += data
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > MAX_STATUS_LINE:
                self._fail(ValueError("no status line"))
            return
        match = _STATUS_LINE.match(self.buffer[: end + 1].rstrip(b"\n"))
        if match is None:
            self._fail(ValueError(f"bad status line {self.buffer[:end]!r}"))
            return
        self.status.callback(int(match.group(1)))
        self.close(abort=False)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if not self.status.called:
            self.status.errback(ConnectionError("closed before a status line"))

    def _fail(self, error: Exception) -> None:
        self.status.errback(error)
        self.close()

    def close(self, abort: bool = True) -> None:
        """Hang up once (again: nothing); ``abort`` resets instead of closing."""
        transport: Any = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()


class _ProbeFactory(Factory):
    noisy = False  # no "Starting factory" line per probe

    def __init__(self, request: bytes, status: Deferred[int]) -> None:
        self.request = request
        self.status = status
        self.protocol_instance: _ProbeProtocol | None = None

    def buildProtocol(self, addr: object) -> _ProbeProtocol:
        self.protocol_instance = _ProbeProtocol(self.request, self.status)
        return self.protocol_instance


class _ProbeTimeout(Exception):
    pass


def probe_request(host: str, path: str) -> bytes:
    """lua-resty-healthcheck's request: HTTP/1.0, the target's host, nothing else."""
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("latin-1", "replace")


def target_host(target: str) -> str:
    """The host part of a ``host:port`` target (``[::1]`` stays bracketed): the probe's Host."""
    if target.startswith("["):
        return target[: target.index("]") + 1] if "]" in target else target
    host, sep, port = target.rpartition(":")
    return host if sep and port.isdigit() else target


def _probe_endpoint(
    reactor: IReactorTCP, kind: str, ip: str, port: int, host: str, timeout: float
) -> IStreamClientEndpoint:
    endpoint_type = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
    endpoint: IStreamClientEndpoint = endpoint_type(
        reactor, ip, port, timeout=max(int(timeout + 1), 1)
    )
    if kind == "https":
        # The proxy's TLS client: SNI = the target's host, certificate not verified;
        # imported here, not at the top, so the admin side does not load the proxy.
        from kongtx.proxy.upstream_tls import UnverifiedTLSCreator, client_tls_context

        endpoint = wrapClientTLS(
            UnverifiedTLSCreator(client_tls_context(), host.strip("[]")), endpoint
        )
    return endpoint


async def http_probe(
    reactor: IReactorTCP,
    clock: Clock,
    ip: str,
    port: int,
    host: str,
    path: str,
    timeout: float,
    kind: str = "http",
) -> Outcome:
    """One probe of ``kind`` ``http``, ``https`` or ``tcp`` (a connect is all it checks).

    Never raises (but ``CancelledError``): a refused or broken connection is
    ``("tcp_failure", 0)``, no answer within ``timeout`` s ``("timeout", 0)``, a
    status line ``("http", status)``, a ``tcp`` connect ``("success", 0)``.
    """
    status: Deferred[int] = Deferred()
    factory = _ProbeFactory(b"" if kind == "tcp" else probe_request(host, path), status)
    connecting = _probe_endpoint(reactor, kind, ip, port, host, timeout).connect(factory)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        if not connecting.called:
            connecting.cancel()
        if not status.called:
            status.errback(_ProbeTimeout())

    timer = clock.call_later(timeout, expire)
    try:
        try:
            await connecting
        except Exception as e:
            if expired or isinstance(e, ConnectTimeout | TimeoutError):
                return ("timeout", 0)  # ours cancels the connect: ConnectingCancelledError
            if isinstance(e, CancelledError | ConnectingCancelledError):
                raise CancelledError() from e  # the caller cancelled (checker stopping)
            return ("tcp_failure", 0)
        if kind == "tcp":
            if factory.protocol_instance is not None:
                factory.protocol_instance.close(abort=False)
            return ("success", 0)
        try:
            return ("http", await status)
        except _ProbeTimeout:
            return ("timeout", 0)
        except CancelledError:
            raise
        except Exception:
            return ("tcp_failure", 0)
    finally:
        if timer.active():
            timer.cancel()
        status.addErrback(lambda _: None)  # read above, or nobody will: not "unhandled"
        if factory.protocol_instance is not None:
            factory.protocol_instance.close()


def rules_prober(reactor: IReactorTCP, clock: Clock) -> Prober:
    """The real :data:`Prober`: :func:`http_probe` as an ``active`` block asks for it."""

    def prober(ip: str, port: int, host: str, rules: Mapping[str, Any]) -> Awaitable[Outcome]:
        path, timeout = str(rules["http_path"]), float(rules["timeout"])
        kind = str(rules.get("type") or "http")
        return http_probe(reactor, clock, ip, port, host, path, timeout, kind)

    return prober
