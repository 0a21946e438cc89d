"""The reading side of an upstream connection: llhttp's callbacks, turned into flags.

A :class:`ResponseReader` is kept per upstream connection with its response parser
(``httptools``), which a keep-alive connection reuses from response to response
(creating one costs more than parsing a small response).  While the connection's
current :class:`kongtx.proxy.exchange.Exchange` feeds the parser, these callbacks
keep what of the head reaches the client, read its framing and note what the read
brought: the head complete, body chunks, the end (a parse error is the exchange's
to note), which the exchange handles once the read is parsed.  (As
:class:`kongtx.proxy.fast_parsing.RequestReader` is the front-end connection's.)
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import httptools

from kongtx.proxy.headers import HEADER_NAMES, header_name
from kongtx.proxy.upstream_response import RESPONSE_DROP

#: (``Final`` aliases: C statics for the compiled code, not module dictionary lookups)
_HEADER_NAMES: Final = HEADER_NAMES
_RESPONSE_DROP: Final = RESPONSE_DROP
#: each known status's standard reason phrase: an upstream's own phrase is relayed
_PHRASES: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}


class ResponseReader:
    """httptools' callbacks for one connection's responses (the parser calls them in ``feed_data``).

    One response at a time: :meth:`start` readies it for the next exchange.  The
    parser is kept while it stands between two messages (the last one complete,
    nothing of another begun): a HEAD response (whose body llhttp still awaits), a
    parse error or an upgrade leave it dirty, and the next exchange gets a new one.

    What a read brought is noted in flags and a list of chunks (no event tuples),
    which the exchange takes in order: the head, the chunks, the end, an error.
    Once the response is complete, nothing more of that read is noted (the bytes
    of another message: the connection is then not reused); header fields are
    kept only while in the head (not a chunked body's trailer fields).
    """

    def __init__(self) -> None:
        #: ``None`` once the connection is lost (breaks the reader <-> parser cycle)
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        #: the parser is between two messages: the next exchange may reuse it
        self.clean = True
        #: the current request's method (a HEAD response has no body whatever its head says)
        self.method = ""
        #: the upstream keeps the connection open (read when the head is complete)
        self.keep_alive = False
        # the current message: its reason phrase, the headers passed on, the framing
        self._reason = b""
        self._headers: list[tuple[str, str, str]] = []
        self._length: int | None = None
        self._chunked = False
        self._status = 0
        #: the final response's reason phrase when it is not its status's standard one
        #: (nginx, so Kong 0.9, relays the upstream's status line), else ""
        self.reason = ""
        #: reading a head (its header fields are kept)
        self._in_head = False
        # what the current read brought, taken by the exchange after ``feed_data``:
        #: the final response's head is complete
        self.head_done = False
        #: body chunks
        self.chunks: list[bytes] = []
        #: the response is complete
        self.completed = False
        #: the parse error (set by the exchange), ``None`` if none
        self.error: str | None = None

    def start(self, method: str) -> httptools.HttpResponseParser:
        """Ready for the response to a ``method`` request; the parser to feed."""
        self.method = method
        self._status = 0
        self._in_head = False
        self.head_done = False
        self.completed = False
        self.error = None
        if self.chunks:
            self.chunks = []
        parser = self.parser
        if parser is None or not self.clean:
            parser = self.parser = httptools.HttpResponseParser(self)
            self.clean = True
        return parser

    def on_message_begin(self) -> None:
        self.clean = False
        if self.completed:
            return  # another message after the response, in the same read: ignored
        self._in_head = True
        self._headers = []
        self._reason = b""
        self._length = None
        self._chunked = False

    def on_status(self, reason: bytes) -> None:
        if self._in_head:
            self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field, or another message's
        known = _HEADER_NAMES.get(name)
        sname, low = known if known is not None else header_name(name)
        svalue = value.decode("latin-1")
        if low not in _RESPONSE_DROP:
            self._headers.append((low, sname, svalue))
        elif low == "content-length":
            try:
                self._length = int(svalue)
            except ValueError:
                self._length = None
        elif low == "transfer-encoding" and "chunked" in svalue.lower():
            self._chunked = True

    def on_headers_complete(self) -> None:
        if not self._in_head:
            return
        self._in_head = False
        parser: Any = self.parser  # feeding: not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue and friends: the real response follows
        self._status = status
        reason = self._reason
        self.reason = (
            "" if not reason or _PHRASES.get(status) == reason else reason.decode("latin-1")
        )
        # llhttp forgets the connection flags once the message completes: read them now.
        self.keep_alive = parser.should_keep_alive()
        self.head_done = True
        if self.method == "HEAD":
            self.completed = True  # llhttp still awaits a body: not clean

    def on_body(self, body: bytes) -> None:
        if not self.completed:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.clean = True
        parser: Any = self.parser  # feeding: not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return
        self.completed = True
