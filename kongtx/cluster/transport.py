# -*- test-case-name: tests.unit.test_cluster_codec -*-
"""The gossip sockets: one UDP port and one TCP listener on ``cluster_listen``.

UDP carries probes and gossip (one datagram at a time, malformed ones dropped and
counted, never raised out of ``datagramReceived``: STYLE.md rule 11).  TCP carries
one message per connection (push/pull state exchange, the fallback ping, user
messages).  A plaintext memberlist stream has **no outer length**: the type byte is
followed by msgpack read straight off the socket, so :func:`parse_stream` is an
incremental parser that answers "not yet" until a whole message has arrived.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from kongtx import log
from kongtx.cluster import codec
from kongtx.cluster.codec import DecodeError

#: refuse absurd node counts before looping over them
MAX_NODES = 100_000

Parsed = tuple[int, Any]


def parse_stream(buf: bytes, keys: Sequence[bytes]) -> tuple[Parsed, int] | None:
    """``((type, body), consumed)`` for the first whole message in ``buf``, else None.

    Bodies: pushPull ``(header, nodes, user_state)``, user ``bytes``, anything else
    the decoded msgpack object.  With keys, a plaintext stream is refused (memberlist
    ``GossipVerifyIncoming``); encryption and compression wrap a complete message.
    """
    if not buf:
        return None
    label, rest = b"", buf
    if buf[0] == codec.HAS_LABEL:
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return None
        label, rest = codec.strip_label(buf)
    skipped = len(buf) - len(rest)
    if keys and rest[0] != codec.ENCRYPT:
        raise DecodeError("plaintext stream while encryption is on")
    if rest[0] == codec.ENCRYPT:
        if len(rest) < 5:
            return None
        (length,) = struct.unpack(">I", rest[1:5])
        if length > codec.MAX_STREAM:
            raise DecodeError("encrypted stream too large")
        if len(rest) < 5 + length:
            return None
        plain = codec.decrypt(keys, rest[5 : 5 + length], rest[:5] + label)
        return _complete(plain), skipped + 5 + length
    found = _parse(rest)
    if found is None:
        return None
    parsed, used = found
    return parsed, skipped + used


def _complete(data: bytes) -> Parsed:
    found = _parse(data)
    if found is None:
        raise DecodeError("truncated message")
    return found[0]


def _parse(buf: bytes) -> tuple[Parsed, int] | None:
    msg_type = buf[0]
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=codec.MAX_STREAM)
    unpacker.feed(buf[1:])
    try:
        if msg_type == codec.COMPRESS:
            body = unpacker.unpack()
            return _complete(codec.decompress(body)), 1 + unpacker.tell()
        if msg_type == codec.PUSH_PULL:
            header = codec.fields(unpacker.unpack())
            count = codec.integer(header.get("Nodes"))
            if not 0 <= count <= MAX_NODES:
                raise DecodeError("bad node count")
            nodes = [codec.fields(unpacker.unpack()) for _ in range(count)]
            return _tail(buf, unpacker, header.get("UserStateLen"), (header, nodes))
        if msg_type == codec.USER:
            header = codec.fields(unpacker.unpack())
            return _tail(buf, unpacker, header.get("UserMsgLen"), None)
        return (msg_type, unpacker.unpack()), 1 + unpacker.tell()
    except msgpack.OutOfData:
        return None
    except (ValueError, TypeError, msgpack.ExtraData) as e:
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"bad stream: {e}") from e


def _tail(buf: bytes, unpacker: Any, length: Any, head: Any) -> tuple[Parsed, int] | None:
    size = codec.integer(length)
    start = 1 + unpacker.tell()
    if size < 0 or size > codec.MAX_STREAM:
        raise DecodeError("bad length")
    if len(buf) < start + size:
        return None
    data = buf[start : start + size]
    if head is None:
        return (codec.USER, data), start + size
    return (codec.PUSH_PULL, (head[0], head[1], data)), start + size


def frame_stream(message: bytes, key: bytes | None) -> bytes:
    """An outgoing stream: encrypted when keyed (we send it uncompressed: always accepted)."""
    return codec.seal_stream(key, message) if key else message


# ----------------------------------------------------------------------------- UDP


class GossipDatagram(protocol.DatagramProtocol):
    """UDP side: hand each datagram to ``on_packet``; count the ones that fail."""

    log = log.logger()

    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_packet = on_packet
        self.dropped = 0
        #: test hook: a function deciding to drop an incoming datagram (loss simulation)
        self.drop_filter: Callable[[bytes], bool] | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.drop_filter is not None and self.drop_filter(datagram):
            return
        try:
            self.on_packet(datagram, (addr[0], addr[1]))
        except DecodeError as e:
            self.dropped += 1
            self.log.debug("dropped a gossip packet from {addr}: {error}", addr=addr, error=e)
        except Exception:
            self.dropped += 1
            self.log.failure("gossip packet from {addr} failed", addr=addr)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram; socket errors (unreachable peer) are not ours to raise."""
        udp: Any = self.transport
        if udp is None:
            return
        try:
            udp.write(data, addr)
        except OSError as e:
            self.log.debug("gossip send to {addr} failed: {error}", addr=addr, error=e)


# ----------------------------------------------------------------------------- TCP

StreamHandler = Callable[[Parsed, "GossipStream"], None]


class GossipStream(protocol.Protocol):
    """One TCP connection; calls ``handler`` with each whole message."""

    @property
    def _t(self) -> Any:
        return self.transport

    log = log.logger()

    def __init__(self, keys: Sequence[bytes], handler: StreamHandler) -> None:
        self.keys = keys
        self.handler = handler
        self.buffer = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > codec.MAX_STREAM:
            self._t.loseConnection()
            return
        while self.buffer:
            try:
                found = parse_stream(self.buffer, self.keys)
            except DecodeError as e:
                self.log.debug("dropped a gossip stream: {error}", error=e)
                self.buffer = b""
                self._t.loseConnection()
                return
            if found is None:
                return
            parsed, used = found
            self.buffer = self.buffer[used:]
            self.handler(parsed, self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)


class StreamServerFactory(protocol.Factory):
    """Builds a :class:`GossipStream` per accepted connection."""

    def __init__(self, keys: Sequence[bytes], handler: StreamHandler) -> None:
        self.keys = keys
        self.handler = handler

    def buildProtocol(self, addr: Any) -> GossipStream:
        return GossipStream(self.keys, self.handler)


class _Exchange(protocol.Protocol):
    """Client side of one request/response stream (push/pull or a TCP ping)."""

    @property
    def _t(self) -> Any:
        return self.transport

    def __init__(self, request: bytes, keys: Sequence[bytes], wait_reply: bool) -> None:
        self.request = request
        self.keys = keys
        self.wait_reply = wait_reply
        self.buffer = b""
        self.result: Deferred[Parsed | None] = Deferred()

    def connectionMade(self) -> None:
        self._t.write(self.request)
        if not self.wait_reply:
            self._finish(None)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        try:
            found = parse_stream(self.buffer, self.keys)
        except DecodeError as e:
            self._fail(e)
            return
        if found is not None:
            self._finish(found[0])

    def _finish(self, value: Parsed | None) -> None:
        if not self.result.called:
            self.result.callback(value)
        self._t.loseConnection()

    def _fail(self, error: Exception) -> None:
        if not self.result.called:
            self.result.errback(Failure(error))
        self._t.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.result.called:
            self.result.errback(ConnectionError("connection closed before a reply"))


class _ExchangeFactory(protocol.ClientFactory):
    noisy = False  # one per push/pull: "Starting factory" lines would flood the log

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def buildProtocol(self, addr: Any) -> _Exchange:
        return self.exchange

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.exchange.result.called:
            self.exchange.result.errback(reason)


async def exchange(
    reactor: Any,
    clock: Any,
    addr: tuple[str, int],
    request: bytes,
    keys: Sequence[bytes],
    timeout: float,
    wait_reply: bool = True,
) -> Parsed | None:
    """Open a TCP connection, send ``request``, return the reply (timeout on ``clock``)."""
    ex = _Exchange(request, keys, wait_reply)
    connector = reactor.connectTCP(addr[0], addr[1], _ExchangeFactory(ex), timeout=timeout)
    timer = clock.call_later(timeout, lambda: ex.result.called or connector.disconnect())
    try:
        return await ex.result
    finally:
        if timer.active():
            timer.cancel()
