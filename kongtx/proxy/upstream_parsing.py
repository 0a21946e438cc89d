"""The reading side of an upstream exchange: llhttp's callbacks, turned into events.

:class:`ResponseReader` is the base of :class:`kongtx.proxy.exchange.Exchange` (as
:class:`kongtx.proxy.fast_parsing.RequestReader` is the front-end connection's): while
the exchange feeds the response parser (``httptools``), these callbacks keep what of
the head reaches the client, read its framing and queue events (:data:`HEADERS`,
:data:`BODY`, :data:`COMPLETE`, :data:`ERROR`), which the exchange handles once the
read is parsed.
"""

from __future__ import annotations

from typing import Any

import httptools

from kongtx.proxy.headers import HEADER_NAMES, header_name
from kongtx.proxy.upstream_response import RESPONSE_DROP

#: the kinds of the events queued for the exchange: ``(kind, data)``
HEADERS, BODY, COMPLETE, ERROR = range(4)


class ResponseReader:
    """httptools' callbacks for one exchange's response (the parser calls them in ``feed_data``).

    The state is declared here and initialized by the exchange's ``__init__`` (one
    constructor per request, no ``super().__init__()`` call on the hot path).
    """

    #: the request's method (a HEAD response has no body whatever its head says)
    method: str
    #: the response parser; ``None`` once the exchange finished
    parser: httptools.HttpResponseParser | None
    #: the upstream keeps the connection open (read when the head is complete)
    keep_alive: bool
    # the current message: its reason phrase, the headers passed on, the framing
    _reason: bytes
    _headers: list[tuple[str, str, str]]
    _length: int | None
    _chunked: bool
    _status: int
    #: what the current read produced, handled by the exchange after ``feed_data``
    _events: list[tuple[int, bytes]]

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""
        self._length = None
        self._chunked = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        known = HEADER_NAMES.get(name)
        sname, low = known if known is not None else header_name(name)
        svalue = value.decode("latin-1")
        if low not in RESPONSE_DROP:
            self._headers.append((low, sname, svalue))
        elif low == "content-length":
            try:
                self._length = int(svalue)
            except ValueError:
                self._length = None
        elif low == "transfer-encoding" and "chunked" in svalue.lower():
            self._chunked = True

    def on_headers_complete(self) -> None:
        parser: Any = self.parser  # feeding: not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue and friends: the real response follows
        self._status = status
        # llhttp forgets the connection flags once the message completes: read them now.
        self.keep_alive = parser.should_keep_alive()
        self._events.append((HEADERS, b""))
        if self.method == "HEAD":
            self._events.append((COMPLETE, b""))

    def on_body(self, body: bytes) -> None:
        self._events.append((BODY, body))

    def on_message_complete(self) -> None:
        parser: Any = self.parser  # feeding: not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return
        self._events.append((COMPLETE, b""))
