# -*- test-case-name: tests.unit.test_log_transports -*-
"""How logging plugins ship their messages, without ever hurting the proxy (SPEC §4.6).

Every sender here is fire-and-forget for the caller (``send`` returns at once,
never raises) and bounded: a slow or dead receiver fills a fixed-size queue,
after which messages are dropped and counted (``dropped``), so memory cannot
grow without bound and the client's response is never delayed.

* :class:`UdpSender`: one non-blocking datagram per message (udp-log, statsd,
  datadog, loggly); host names are resolved by the reactor and cached.
* :class:`TcpSender`: one pooled keep-alive connection per (host, port)
  (tcp-log).  Twisted pauses us when the socket's buffer is full; messages wait
  in the bounded queue meanwhile.  Idle connections close after ``keepalive``.
* :class:`HttpSender`: hand-written HTTP/1.1 requests on keep-alive connections
  (http-log, runscope, galileo), a few connections per endpoint, one request
  in flight on each; https without certificate verification (as Kong).
* :class:`FileSender`: appends lines to a file whose descriptor stays open,
  written by a thread so a slow disk never blocks the reactor (file-log).
* :class:`SyslogSender`: datagrams to the local syslog socket (syslog).

Senders are node-wide (:func:`senders`): handlers come and go with their
configuration, connections and queues stay.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorThreads
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtx.clock import Clock
from kongtx.log import logger

__all__ = [
    "MAX_QUEUE",
    "FileSender",
    "HttpSender",
    "LogDropped",
    "Senders",
    "SyslogSender",
    "TcpSender",
    "UdpSender",
    "quiet",
    "senders",
]

log = logger("kongtx.plugins.log_transports")

#: messages a sender holds while its receiver is slow or away; more are dropped
MAX_QUEUE = 10000
#: how long a resolved host name is used before resolving it again
DNS_TTL = 60.0
#: how long a failed TCP/HTTP receiver is left alone before the next try
RETRY_SECONDS = 1.0


class LogDropped(Exception):
    """A message was not delivered (queue full, receiver gone, timeout)."""


class _Counted:
    """``sent`` / ``dropped`` counters, shared by every sender."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0

    def _drop(self, why: str, count: int = 1) -> None:
        if self.dropped == 0 or self.dropped % 1000 == 0:
            log.warn("{sender}: log message dropped: {why}", sender=self, why=why)
        self.dropped += count


# ------------------------------------------------------------------------- UDP


class _Resolver:
    """Host name -> IP through the reactor (never getaddrinfo on the reactor thread)."""

    def __init__(self, reactor: Any, clock: Clock) -> None:
        self.reactor = reactor
        self.clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def cached(self, host: str) -> str | None:
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        found = self._cache.get(host)
        if found is not None and found[1] > self.clock.seconds():
            return found[0]
        return None

    async def resolve(self, host: str) -> str:
        ip = self.cached(host)
        if ip is not None:
            return ip
        ip = str(await self.reactor.resolve(host))
        self._cache[host] = (ip, self.clock.seconds() + DNS_TTL)
        return ip


class UdpSender(_Counted):
    """Datagrams to any (host, port) from one non-blocking socket per address family."""

    def __init__(self, resolver: _Resolver) -> None:
        super().__init__()
        self.resolver = resolver
        self._sockets: dict[int, socket.socket] = {}

    def __repr__(self) -> str:
        return "<UdpSender>"

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sockets[family] = sock
        return sock

    def send(self, host: str, port: int, data: bytes) -> None:
        """Send one datagram now (or once the host name is resolved)."""
        ip = self.resolver.cached(host)
        if ip is not None:
            self._send_to(ip, port, data)
            return

        async def later() -> None:
            try:
                resolved = await self.resolver.resolve(host)
            except Exception as e:
                self._drop(f"cannot resolve {host}: {e}")
                return
            self._send_to(resolved, port, data)

        Deferred.fromCoroutine(later())

    def _send_to(self, ip: str, port: int, data: bytes) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            self._socket(family).sendto(data, (ip, int(port)))
        except OSError as e:
            self._drop(f"udp {ip}:{port}: {e}")
            return
        self.sent += 1

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


# ------------------------------------------------------------------------- syslog


class SyslogSender(_Counted):
    """Datagrams to the local syslog socket (``/dev/log``, or ``KONGTX_SYSLOG_SOCKET``)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<SyslogSender {self.path}>"

    def send(self, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            self._sock.sendto(data, self.path)
        except OSError as e:
            self._drop(f"syslog socket {self.path}: {e}")
            return
        self.sent += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ------------------------------------------------------------------------- TCP


@implementer(IPushProducer)
class _TcpConnection(Protocol):
    def __init__(self, sender: TcpSender) -> None:
        self.sender = sender
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.sender._flush()

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        """A log receiver has nothing to say; whatever it sends is ignored."""

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.sender._lost(self, reason)


class TcpSender(_Counted):
    """One keep-alive TCP connection to a log receiver, with a bounded queue."""

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        host: str,
        port: int,
        timeout: float,
        keepalive: float,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock = clock
        self.host = host
        self.port = port
        self.timeout = timeout
        self.keepalive = keepalive
        self.max_queue = max_queue
        self.queue: deque[bytes] = deque()
        self._conn: _TcpConnection | None = None
        self._connecting = False
        self._idle: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<TcpSender {self.host}:{self.port}>"

    def send(self, data: bytes) -> None:
        conn = self._conn
        if conn is not None and not conn.paused and not self.queue:
            conn.transport.write(data)  # type: ignore[union-attr]
            self.sent += 1
            self._touch()
            return
        if len(self.queue) >= self.max_queue:
            self._drop("queue full")
            return
        self.queue.append(data)
        if conn is None:
            self._connect()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.keepalive)
        else:
            self._idle = self.clock.call_later(self.keepalive, self._close_idle)

    def _close_idle(self) -> None:
        self._idle = None
        if self._conn is not None:
            self._conn.transport.loseConnection()  # type: ignore[union-attr]

    def _connect(self) -> None:
        if self._connecting or (self._retry is not None and self._retry.active()):
            return
        self._connecting = True
        endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        d = connectProtocol(endpoint, _TcpConnection(self))
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, conn: _TcpConnection) -> None:
        self._connecting = False
        self._conn = conn
        self._flush()

    def _failed(self, reason: Failure) -> None:
        self._connecting = False
        log.warn(
            "tcp log receiver {host}:{port} unreachable: {why}",
            host=self.host,
            port=self.port,
            why=reason.getErrorMessage(),
        )
        self._retry = self.clock.call_later(RETRY_SECONDS, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self.queue:
            self._connect()

    def _flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        queue = self.queue
        while queue and not conn.paused:
            conn.transport.write(queue.popleft())  # type: ignore[union-attr]
            self.sent += 1
        self._touch()

    def _lost(self, conn: _TcpConnection, reason: Failure) -> None:
        if self._conn is conn:
            self._conn = None
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.queue:
            self._retry = self.clock.call_later(RETRY_SECONDS, self._retry_now)

    def close(self) -> None:
        for call in (self._idle, self._retry):
            if call is not None and call.active():
                call.cancel()
        if self._conn is not None:
            self._conn.transport.loseConnection()  # type: ignore[union-attr]


# ------------------------------------------------------------------------- HTTP


class _HttpConnection(Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.waiting: Deferred[int] | None = None
        self.lost = False
        self._status = 0
        self._keep_alive = True
        self._parser = httptools.HttpResponseParser(self)

    def request(self, data: bytes) -> Deferred[int]:
        self.waiting = Deferred()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(LogDropped(f"bad response: {e}"))
            self.transport.abortConnection()  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        d, self.waiting = self.waiting, None
        if not self._keep_alive:
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.lost = True
        if d is not None:
            d.callback(self._status)

    def _fail(self, error: Exception) -> None:
        d, self.waiting = self.waiting, None
        if d is not None:
            d.errback(Failure(error))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.lost = True
        self._fail(LogDropped(f"connection lost: {reason.getErrorMessage()}"))


class HttpSender(_Counted):
    """POSTs (or PUT/PATCH) of JSON bodies to one URL, on keep-alive connections."""

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        url: str,
        timeout: float,
        keepalive: float,
        connections: int = 4,
        max_queue: int = MAX_QUEUE,
        verify: bool = False,
    ) -> None:
        super().__init__()
        parts = urlsplit(url)
        self.reactor = reactor
        self.clock = clock
        self.url = url
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.keepalive = keepalive
        self.max_connections = connections
        self.max_queue = max_queue
        self.verify = verify
        self.queue: deque[tuple[bytes, Deferred[int]]] = deque()
        self.busy = 0
        self._idle: list[tuple[_HttpConnection, IDelayedCall]] = []

    def __repr__(self) -> str:
        return f"<HttpSender {self.url}>"

    def request_bytes(
        self, method: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Kong's hand-written request: Host, Connection, Content-Type, Content-Length."""
        head = (
            f"{method} {self.target} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Connection: Keep-Alive\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        return head.encode("latin-1") + b"\r\n" + body

    def send(self, data: bytes) -> Deferred[int]:
        """Queue one whole request; fires with the response status or fails with LogDropped.

        The caller need not wait: a failure is counted and logged here.
        """
        d: Deferred[int] = Deferred()
        if len(self.queue) >= self.max_queue:
            self._drop("queue full")
            d.errback(Failure(LogDropped("queue full")))
            return d
        self.queue.append((data, d))
        self._pump()
        return d

    def _pump(self) -> None:
        while self.queue and self.busy < self.max_connections:
            data, d = self.queue.popleft()
            self.busy += 1
            Deferred.fromCoroutine(self._deliver(data, d))

    async def _deliver(self, data: bytes, d: Deferred[int]) -> None:
        expired: list[bool] = []
        work: Deferred[tuple[_HttpConnection, int]] = Deferred.fromCoroutine(self._exchange(data))

        def give_up() -> None:
            expired.append(True)
            work.cancel()

        timer = self.clock.call_later(self.timeout, give_up)
        try:
            conn, status = await work
        except Exception as e:
            why = "timeout" if expired else str(e)
            self._drop(f"{self.url}: {why}")
            d.errback(Failure(LogDropped(why)))
        else:
            self.sent += 1
            if not conn.lost:
                self._release(conn)
            d.callback(status)
        finally:
            if timer.active():
                timer.cancel()
            self.busy -= 1
            self._pump()

    async def _exchange(self, data: bytes) -> tuple[_HttpConnection, int]:
        conn = await self._connection()
        try:
            status = await conn.request(data)
        except CancelledError:
            conn.transport.abortConnection()  # type: ignore[union-attr]
            raise
        return conn, status

    async def _connection(self) -> _HttpConnection:
        while self._idle:
            conn, expiry = self._idle.pop()
            if expiry.active():
                expiry.cancel()
            if not conn.lost:
                return conn
        if self.https:
            options = (
                ssl.optionsForClientTLS(self.host)
                if self.verify
                else ssl.CertificateOptions(verify=False)
            )
            endpoint: Any = SSL4ClientEndpoint(
                self.reactor, self.host, self.port, options, timeout=self.timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        fresh: _HttpConnection = await connectProtocol(endpoint, _HttpConnection())
        return fresh

    def _release(self, conn: _HttpConnection) -> None:
        def expire() -> None:
            self._idle = [(c, t) for c, t in self._idle if c is not conn]
            conn.transport.loseConnection()  # type: ignore[union-attr]

        self._idle.append((conn, self.clock.call_later(self.keepalive, expire)))

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, expiry in idle:
            if expiry.active():
                expiry.cancel()
            conn.transport.loseConnection()  # type: ignore[union-attr]


# ------------------------------------------------------------------------- file


class FileSender(_Counted):
    """Appends to one file, its descriptor kept open, written off the reactor thread."""

    def __init__(self, reactor: Any, path: str, max_queue: int = MAX_QUEUE) -> None:
        super().__init__()
        self.reactor = reactor
        self.path = path
        self.max_queue = max_queue
        self.queue: deque[bytes] = deque()
        self._writing = False
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<FileSender {self.path}>"

    def send(self, data: bytes) -> None:
        if len(self.queue) >= self.max_queue:
            self._drop("queue full (slow disk)")
            return
        self.queue.append(data)
        if not self._writing:
            self._writing = True
            self._start_write()

    def _start_write(self) -> None:
        batch = b"".join(self.queue)
        count = len(self.queue)
        self.queue.clear()
        if IReactorThreads.providedBy(self.reactor):
            self.reactor.callInThread(self._write_in_thread, batch, count)
        else:
            self._written(self._write(batch), count)

    def _write_in_thread(self, batch: bytes, count: int) -> None:
        error = self._write(batch)
        self.reactor.callFromThread(self._written, error, count)

    def _write(self, batch: bytes) -> str | None:
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                view = memoryview(batch)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as e:
                return str(e)
        return None

    def _written(self, error: str | None, count: int) -> None:
        if error is None:
            self.sent += count
        else:
            self._drop(f"{self.path}: {error}", count)
        if self.queue:
            self._start_write()
        else:
            self._writing = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# ------------------------------------------------------------------------- registry


class Senders:
    """The node's senders, one per destination, reused by every handler."""

    def __init__(self, reactor: Any, clock: Clock) -> None:
        self.reactor = reactor
        self.clock = clock
        self.resolver = _Resolver(reactor, clock)
        self.udp = UdpSender(self.resolver)
        self._tcp: dict[tuple[str, int], TcpSender] = {}
        self._http: dict[tuple[str, bool], HttpSender] = {}
        self._files: dict[str, FileSender] = {}
        self._syslog: dict[str, SyslogSender] = {}

    def tcp(self, host: str, port: int, timeout: float, keepalive: float) -> TcpSender:
        key = (host, port)
        sender = self._tcp.get(key)
        if sender is None:
            sender = self._tcp[key] = TcpSender(
                self.reactor, self.clock, host, port, timeout, keepalive
            )
        sender.timeout, sender.keepalive = timeout, keepalive
        return sender

    def http(self, url: str, timeout: float, keepalive: float, verify: bool = False) -> HttpSender:
        key = (url, verify)
        sender = self._http.get(key)
        if sender is None:
            sender = self._http[key] = HttpSender(
                self.reactor, self.clock, url, timeout, keepalive, verify=verify
            )
        sender.timeout, sender.keepalive = timeout, keepalive
        return sender

    def file(self, path: str) -> FileSender:
        sender = self._files.get(path)
        if sender is None:
            sender = self._files[path] = FileSender(self.reactor, path)
        return sender

    def syslog(self, path: str) -> SyslogSender:
        sender = self._syslog.get(path)
        if sender is None:
            sender = self._syslog[path] = SyslogSender(path)
        return sender

    def close(self) -> None:
        """Close every socket and file (tests; a stopping node)."""
        self.udp.close()
        for group in (self._tcp, self._http, self._files, self._syslog):
            for sender in group.values():
                sender.close()
            group.clear()


_SENDERS: weakref.WeakKeyDictionary[Clock, Senders] = weakref.WeakKeyDictionary()


def senders(services: Any) -> Senders:
    """The node's :class:`Senders` (one per node Clock).

    Raises ``ValueError`` without services: a log plugin needs the node's clock
    and reactor (the runtime always passes them).
    """
    if services is None:
        raise ValueError("logging plugins need the node's services (clock, reactor)")
    clock: Clock = services.clock
    found = _SENDERS.get(clock)
    if found is None:
        reactor = services.reactor if services.reactor is not None else clock.reactor
        found = _SENDERS[clock] = Senders(reactor, clock)
    return found


def quiet(d: Deferred[Any]) -> None:
    """Consume a send's failure: it was already counted and logged by the sender."""
    d.addErrback(lambda f: f.trap(LogDropped) and None)
