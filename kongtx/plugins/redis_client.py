# -*- test-case-name: tests.unit.test_plugin_rate_limiting -*-
"""A small Redis client for the rate-limiting ``redis`` policy (SPEC §4.4).

Why our own and not a client library: the policies need four commands (AUTH,
MGET, INCRBY, EXPIRE), pipelined on a pooled connection, each batch bounded by
``redis_timeout``.  That is a RESP encoder, a reply parser and a pool, about as
long as the glue a general client would need, with no dependency to keep.

Kong kept Redis connections alive for 10 s, 100 per pool; so do we: a batch takes
an idle connection (or opens one), and gives it back when the replies are in.
A connection that timed out or failed is closed, never reused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from kongtx.clock import Clock

__all__ = ["RedisError", "RedisPool", "RedisUnavailable", "encode_command", "parse_reply"]

#: how long an idle connection is kept, and how many (Kong's set_keepalive(10000, 100))
KEEPALIVE_SECONDS = 10.0
POOL_SIZE = 100

Reply = Any


class RedisError(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


class RedisUnavailable(Exception):
    """Redis could not be reached, or did not answer within the timeout."""


def encode_command(*args: str | bytes | int) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            data = str(arg).encode()
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        else:
            data = arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
    nxt = end + 2
    if kind == b"+":
        return line.decode("utf-8", "replace"), nxt
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), nxt
    if kind == b":":
        return int(line), nxt
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, nxt
        if len(buf) < nxt + size + 2:
            raise _Incomplete
        return buf[nxt : nxt + size], nxt + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, nxt
        items = []
        for _ in range(count):
            item, nxt = _parse(buf, nxt)
            items.append(item)
        return items, nxt
    raise ValueError(f"bad RESP reply type {kind!r}")


def parse_reply(buf: bytes) -> tuple[Reply, int] | None:
    """The first complete reply in ``buf`` and how many bytes it used, or None."""
    try:
        return _parse(buf, 0)
    except _Incomplete:
        return None


class RedisProtocol(Protocol):
    """One connection: commands are written at once, replies matched in order."""

    def __init__(self) -> None:
        self._buf = b""
        self._waiting: deque[Deferred[Reply]] = deque()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        while self._waiting:
            try:
                parsed = parse_reply(self._buf)
            except ValueError as e:
                self._fail(RedisUnavailable(f"bad reply from redis: {e}"))
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            if parsed is None:
                return
            reply, used = parsed
            self._buf = self._buf[used:]
            self._waiting.popleft().callback(reply)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.lost = True
        self._fail(RedisUnavailable(f"redis connection lost: {reason.getErrorMessage()}"))

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Failure(error))

    def send(self, commands: Sequence[Sequence[str | bytes | int]]) -> list[Deferred[Reply]]:
        """Write every command in one write; a Deferred per reply, in order."""
        out = [Deferred() for _ in commands]  # type: list[Deferred[Reply]]
        self._waiting.extend(out)
        self.transport.write(b"".join(encode_command(*c) for c in commands))  # type: ignore[union-attr]
        return out

    @property
    def idle(self) -> bool:
        return not self._waiting and not self.lost


class RedisPool:
    """Keep-alive connections to one Redis server (host, port, password)."""

    def __init__(
        self, reactor: Any, clock: Clock, host: str, port: int, password: str | None
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.host = host
        self.port = port
        self.password = password or None
        self._idle: list[tuple[RedisProtocol, IDelayedCall]] = []

    async def execute(
        self, commands: Sequence[Sequence[str | bytes | int]], timeout: float
    ) -> list[Reply]:
        """Run ``commands`` pipelined on one connection within ``timeout`` seconds.

        Raises RedisUnavailable (cannot connect, timed out, connection lost) or
        RedisError (the first error reply).
        """
        expired: list[bool] = []
        work: Deferred[list[Reply]] = Deferred.fromCoroutine(self._execute(commands, timeout))

        def give_up() -> None:
            expired.append(True)
            work.cancel()

        timer = self.clock.call_later(timeout, give_up)
        try:
            replies = await work
        except CancelledError:
            if expired:
                raise RedisUnavailable(
                    f"redis {self.host}:{self.port} did not answer within {timeout} s"
                ) from None
            raise
        finally:
            if timer.active():
                timer.cancel()
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies

    async def _execute(
        self, commands: Sequence[Sequence[str | bytes | int]], timeout: float
    ) -> list[Reply]:
        proto = await self._connection(timeout)
        ok = False
        try:
            replies = [await d for d in proto.send(commands)]
            ok = True
            return replies
        finally:
            if ok and proto.idle:
                self._release(proto)
            elif not proto.lost:
                proto.transport.abortConnection()  # type: ignore[union-attr]

    async def _connection(self, timeout: float) -> RedisProtocol:
        while self._idle:
            proto, expiry = self._idle.pop()
            if expiry.active():
                expiry.cancel()
            if proto.idle:
                return proto
        endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=timeout)
        try:
            fresh: RedisProtocol = await connectProtocol(endpoint, RedisProtocol())
        except CancelledError:
            raise
        except Exception as e:
            raise RedisUnavailable(f"cannot connect to redis {self.host}:{self.port}: {e}") from e
        if self.password:
            (reply,) = [await d for d in fresh.send([("AUTH", self.password)])]
            if isinstance(reply, RedisError):
                fresh.transport.abortConnection()  # type: ignore[union-attr]
                raise reply
        return fresh

    def _release(self, proto: RedisProtocol) -> None:
        if len(self._idle) >= POOL_SIZE:
            proto.transport.loseConnection()  # type: ignore[union-attr]
            return

        def expire() -> None:
            self._idle = [(p, c) for p, c in self._idle if p is not proto]
            proto.transport.loseConnection()  # type: ignore[union-attr]

        self._idle.append((proto, self.clock.call_later(KEEPALIVE_SECONDS, expire)))

    def close(self) -> None:
        """Close every idle connection (the node is stopping)."""
        idle, self._idle = self._idle, []
        for proto, expiry in idle:
            if expiry.active():
                expiry.cancel()
            proto.transport.loseConnection()  # type: ignore[union-attr]
