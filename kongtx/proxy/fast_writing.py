# -*- test-case-name: tests.unit.test_fast_frontend -*-
"""The fast front-end's writing side: the pipeline's ``Downstream``, one head per response.

:class:`ResponseWriter` sits between :class:`kongtx.proxy.fast_parsing.RequestReader`
and the connection (:class:`kongtx.proxy.fast_connection.FastProxyProtocol`): it is
the :class:`kongtx.proxy.context.Downstream` the pipeline writes each response to.  The
head is built in one piece and goes out with the first body bytes (framed by
Content-Length, else chunked on HTTP/1.1, else closed on HTTP/1.0); on plain TCP every
write goes through the connection's queue, sent at the end of the reactor turn
(``direct_write.TurnSender``), else at once.

Compiled with :mod:`kongtx.proxy.fast_parsing` or not at all (``build_info.HOT_PATH``):
a pure ``ResponseWriter`` under a compiled ``RequestReader`` would leave the reader's
native calls of ``_send``/``flush``/``_serve_next`` on its ``NotImplementedError`` stubs
(seen with mypyc 2.4.1: every request fails).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from twisted.internet.interfaces import IPushProducer

from kongtx.proxy.direct_write import write_now
from kongtx.proxy.fast_parsing import ParsedRequest, RequestReader

_NO_BODY_STATUSES = frozenset({204, 304})


def _status_lines() -> dict[int, bytes]:
    lines = {}
    for status in HTTPStatus:
        lines[status.value] = b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    return lines


_STATUS_LINES = _status_lines()
#: the same lines as text: a head is joined as text and encoded once
_STATUS_TEXT: dict[int, str] = {k: v.decode("latin-1") for k, v in _STATUS_LINES.items()}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, precomputed for every known status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


def _status_text(status: int) -> str:
    """:func:`status_line` as text."""
    start = _STATUS_TEXT.get(status)
    if start is None:
        start = status_line(status).decode("latin-1")
    return start


class ResponseWriter(RequestReader):
    """The writing side of one fast front-end connection (the pipeline's ``Downstream``).

    The connection (the subclass) serves the queue and is told when a response is
    complete, in :meth:`_request_done`.
    """

    def __init__(self) -> None:
        super().__init__()
        # response state of the request being served (the connection resets it per request)
        self._head: bytes | None = None
        self._chunked = False
        self._no_body = False
        self._responded = False
        self._producer: IPushProducer | None = None
        #: bytes for the client not sent yet, in order (plain TCP: sent at the end of
        #: the reactor turn, with every other connection's); ``None``: written at once
        self._out: list[bytes] | None = None
        #: the factory's end-of-turn sender (copied when the connection is made)
        self._turn: Any = None
        #: the node is draining: the next response closes the connection (the factory
        #: sets it on every connection, ``FastProxyFactory.drain``)
        self.draining = False

    def _request_done(self, req: ParsedRequest) -> None:
        """The response to ``req`` is complete: the connection's part
        (``FastProxyProtocol._request_done``); a method for mypyc, as
        ``RequestReader._serve_next``."""
        raise NotImplementedError

    @property
    def gone(self) -> bool:
        return self._lost or self._serving is None

    def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        req = self._serving
        if req is None or self._lost:
            return
        lines = [_status_text(status)]
        framed = False
        for name, value in headers:
            lines.append(name)
            lines.append(": ")
            lines.append(value)
            lines.append("\r\n")
            if len(name) == 14 and not framed and name.lower() == "content-length":
                framed = True
        self._end_head(req, status, lines, framed)

    def send_head_lowered(
        self, status: int, items: list[tuple[str, str, str]], reason: str
    ) -> None:
        """:meth:`send_head` of ``(lower-case name, name, value)`` triples (a relayed
        response's headers, as ``HeaderList`` keeps them: no pair list, no ``lower``),
        under the upstream's own reason phrase if it has one."""
        req = self._serving
        if req is None or self._lost:
            return
        lines = [f"HTTP/1.1 {status} {reason}\r\n" if reason else _status_text(status)]
        framed = False
        for entry in items:
            lines.append(entry[1])
            lines.append(": ")
            lines.append(entry[2])
            lines.append("\r\n")
            if entry[0] == "content-length":
                framed = True
        self._end_head(req, status, lines, framed)

    def _end_head(self, req: ParsedRequest, status: int, lines: list[str], framed: bool) -> None:
        """The framing and connection lines after the headers; the head, joined."""
        self._responded = True
        if status in _NO_BODY_STATUSES or status < 200:
            self._no_body = True
        close = not req.keep_alive or self.draining or (req.pipe is not None and not req.complete)
        if not framed and not self._no_body:
            if req.http10:
                close = True
            else:
                self._chunked = True
                lines.append("Transfer-Encoding: chunked\r\n")
        if close:
            self._closing = True
            lines.append("Connection: close\r\n")
            if req.pipe is not None and not req.complete:
                req.pipe.abandon()
        elif req.http10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        # One join and one encode for the whole head (names and values are latin-1
        # by contract).
        self._head = "".join(lines).encode("latin-1")

    def write(self, data: bytes) -> None:
        if self._lost or self._serving is None or not data or self._no_body:
            return
        head, self._head = self._head, b""
        if self._chunked:
            data = b"".join((head or b"", b"%x\r\n" % len(data), data, b"\r\n"))
        elif head:
            data = head + data
        self._send(data)

    def finish(self) -> None:
        req = self._serving
        if req is None or self._lost:
            return
        tail = b"0\r\n\r\n" if self._chunked and not self._no_body else b""
        head, self._head = self._head, None
        if head or tail:
            self._send((head or b"") + tail)
        self._request_done(req)

    def _send(self, data: bytes) -> None:
        """Write ``data`` to the client after whatever is queued (every write goes here)."""
        out = self._out
        if out is None:
            write_now(self.transport, data)
            return
        if not out:
            self._turn.flush_later(self)
        out.append(data)

    def flush(self) -> None:
        """Send what is queued, in one piece (the end of the turn, or before a close)."""
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            write_now(self.transport, data)

    def abort(self) -> None:
        self._closing = True
        self._serving = None
        transport: Any = self.transport
        if transport is not None:
            self.flush()  # what was written before goes first, as if written at once
            transport.abortConnection()

    def register_producer(self, producer: IPushProducer) -> None:
        if not self._lost and self._producer is None:
            self._producer = producer
            self.transport.registerProducer(producer, True)  # type: ignore[union-attr]

    def unregister_producer(self) -> None:
        if self._producer is not None:
            self._producer = None
            if not self._lost:
                self.transport.unregisterProducer()  # type: ignore[union-attr]
