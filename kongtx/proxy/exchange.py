"""One request and its response on one upstream connection, parsed by ``httptools``.

Part of the pooled upstream client (:mod:`kongtx.proxy.upstream`): an
:class:`Exchange` writes the request head, streams the body, parses the response
(llhttp, through its connection's
:class:`kongtx.proxy.upstream_parsing.ResponseReader`) and hands the body on chunk by
chunk (the :class:`kongtx.proxy.upstream_response.UpstreamResponse` it builds is the
push producer the client side registers); the connection's timer enforces the send
and read timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import httptools
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from kongtx.proxy.connection import usable
from kongtx.proxy.direct_write import write_now
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream_parsing import ResponseReader
from kongtx.proxy.upstream_request import ChunkedWriter
from kongtx.proxy.upstream_response import (
    ResponseListener,
    ResponseSink,
    StaleConnection,
    UpstreamResponse,
)

if TYPE_CHECKING:
    from kongtx.proxy.connection import UpstreamConnection
    from kongtx.proxy.upstream import UpstreamClient

#: the body chunks waiting for a sink when none are (shared, never appended to: most
#: exchanges get their sink before any body, and they make no list)
_NOTHING_PENDING: Final[list[bytes]] = []


class Exchange:
    """One request and its response on one connection (read by the connection's reader)."""

    def __init__(
        self,
        client: UpstreamClient,
        conn: UpstreamConnection,
        method: str,
        head: bytes,
        producer: Any,
        chunked: bool = False,
        listener: ResponseListener | None = None,
    ) -> None:
        self.client = client
        self.conn = conn
        self.method = method
        self.head = head
        self.producer = producer
        self.chunked = chunked
        #: the connection's reader (its parser kept from response to response);
        #: ``None`` once the exchange is finished: nothing more is read
        reader = conn.reader
        if reader is None:
            reader = conn.reader = ResponseReader()
        self.reader: ResponseReader | None = reader
        self.parser = reader.start(method)
        # The connection's one timer: send/read deadline now, idle timeout in the pool.
        self.deadline = conn.timer_for(client._clock)
        #: told of the outcome: ``listener`` if given, else the Deferred ``result``
        #: (cancelling it abandons the exchange)
        self.listener = listener
        self.result: Deferred[UpstreamResponse] | None = (
            None if listener is not None else Deferred(lambda _: self.abandon())
        )
        self.announced = False
        self.response: UpstreamResponse | None = None
        self.sink: ResponseSink | None = None
        self.pending: list[bytes] = _NOTHING_PENDING
        self.got_bytes = False
        self.complete = False
        self.finished = False
        self.abandoned = False
        self.paused = False
        self.keep_alive = False
        self.sending = False
        self.read_until_close = False
        #: a body failure met before a sink was attached (delivered on attach)
        self._body_failure: Failure | None = None

    # ------------------------------------------------------------ sending

    def start(self) -> Deferred[UpstreamResponse]:
        """:meth:`begin`, then the Deferred of the response (an exchange without listener)."""
        self.begin()
        result = self.result
        assert result is not None
        return result

    def begin(self) -> None:
        """Send the head (and the body after it): the response goes to the listener."""
        transport: Any = self.conn.transport
        assert transport is not None
        self.conn.exchange = self
        producer = self.producer
        if producer is None:
            # Nothing follows the head on this connection until the response: it may
            # wait for the end of the reactor turn, sent with the turn's other heads.
            self.client.send_at_turn_end(transport, self.head)
            self.deadline.start("read", self.client.read_timeout)
        else:
            write_now(transport, self.head)
            self.sending = True
            self.deadline.start("send", self.client.send_timeout)
            transport.registerProducer(producer, True)
            consumer = ChunkedWriter(transport) if self.chunked else transport
            producer.startProducing(consumer).addCallbacks(self._sent, self._send_failed)

    def progress(self) -> None:
        self.deadline.touch(self.client.send_timeout)

    def _sent(self, _: object) -> None:
        self.sending = False
        transport: Any = self.conn.transport
        if usable(transport):
            if self.chunked:
                transport.write(b"0\r\n\r\n")
            transport.unregisterProducer()
        if not self.complete and not self.deadline.fired and self.response is None:
            self.deadline.start("read", self.client.read_timeout)

    def _send_failed(self, failure: Failure) -> None:
        self.sending = False
        self._fail_before_response(UpstreamError(502, f"sending the body failed: {failure.value}"))
        self.conn.abort()

    # ------------------------------------------------------------ receiving

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:
            return  # finished (its connection is being closed): nothing more is read
        self.got_bytes = True
        if self.response is not None and not self.paused:
            self.deadline.touch(self.client.read_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            reader.clean = False
            reader.completed = True
        except httptools.HttpParserError as e:
            reader.clean = False
            if self.response is None:
                self._fail_before_response(UpstreamError(502, f"invalid upstream response: {e}"))
                self.conn.abort()
                return
            if not self.complete:
                reader.error = str(e)
        self._process(reader)

    def _process(self, reader: ResponseReader) -> None:
        # What the read brought, taken first: once finished, the connection may be
        # back in the pool, and its reader another exchange's.
        head_done, completed, error = reader.head_done, reader.completed, reader.error
        reader.head_done = reader.completed = False
        reader.error = None
        chunks = reader.chunks
        if chunks:
            reader.chunks = []
        # The response is announced (``result`` fires) after all the read brought is
        # taken in: a small response's body and end, read with its headers, are then
        # already there when the pipeline attaches its sink, which finishes without
        # waiting for another callback.
        announce = False
        if head_done and not self.finished and not self.abandoned:
            announce = self._headers_done(reader)
        for data in chunks:
            if self.finished or self.abandoned or self.complete:
                break  # (bytes after a HEAD response's headers: ignored)
            if self.sink is None:
                if self.pending is _NOTHING_PENDING:
                    self.pending = [data]
                else:
                    self.pending.append(data)
            else:
                self.sink.write(data)
        if completed and not self.complete and not self.finished and not self.abandoned:
            self.complete = True
            self._maybe_finish()
        if error is not None and not self.finished and not self.abandoned:
            self._fail_body(Failure(UpstreamError(502, error)))
        response = self.response
        if announce and response is not None and self._unsettled():
            self._announce(response)

    def _headers_done(self, reader: ResponseReader) -> bool:
        """Build the response; ``True`` when it is new (``result`` is to fire)."""
        if self.response is not None:
            return False
        self.keep_alive = reader.keep_alive
        # on_header kept what reaches the client and read the framing
        chunked = reader._chunked
        length = None if chunked else reader._length
        status = reader._status
        no_body = self.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        self.read_until_close = length is None and not chunked and not no_body
        headers = HeaderList.from_lowered(reader._headers)  # its own: the next head gets a new list
        response = UpstreamResponse(self, status, headers, length, reader.reason)
        self.response = response
        if self.sending and self.producer is not None:
            # The upstream answered before taking the whole body (413...): stop sending;
            # the connection cannot be reused since the upstream stopped reading.
            self.producer.stopProducing()
            self.keep_alive = False
        self.deadline.start("read", self.client.read_timeout)
        return True

    def _maybe_finish(self) -> None:
        if not self.complete or self.sink is None or self.finished:
            return
        self.finished = True
        # Finished: nothing more is read; the exchange <-> response cycle is broken.
        self.reader = None
        if self.response is not None:
            self.response._exchange = None
        if self.paused:
            # The client paused us and the body ended meanwhile: a pooled connection
            # must go back reading, or the next response on it would never be read.
            self.paused = False
            transport: Any = self.conn.transport
            if usable(transport):
                transport.resumeProducing()
        if self.keep_alive and not self.sending and not self.abandoned:
            self.client._release(self.conn)  # re-arms the timer as the idle timeout
        else:
            self.deadline.cancel()
            self.conn.close()
        self.sink.finish()

    def attach(self, sink: ResponseSink) -> None:
        self.sink = sink
        pending = self.pending
        if pending:
            self.pending = _NOTHING_PENDING
            for data in pending:
                sink.write(data)
        failure, self._body_failure = self._body_failure, None
        if failure is not None:
            sink.fail(failure)
        elif self.complete:
            self._maybe_finish()

    # ------------------------------------------------------------ flow control

    def pause(self) -> None:
        if self.finished:
            return  # the connection may be back in the pool: not ours to pause
        self.paused = True
        self.deadline.cancel()  # the client is slow, not the upstream
        transport: Any = self.conn.transport
        if transport is not None:
            transport.pauseProducing()

    def resume(self) -> None:
        if not self.paused or self.finished:
            return
        self.paused = False
        if not self.finished:
            self.deadline.start("read", self.client.read_timeout)
        transport: Any = self.conn.transport
        if usable(transport):
            transport.resumeProducing()

    def abandon(self) -> None:
        """Client gone: close the connection; nothing more is delivered."""
        if self.finished or self.abandoned:
            return
        self.abandoned = True
        self.deadline.cancel()
        if self.producer is not None:
            self.producer.stopProducing()
        self.conn.abort()

    # ------------------------------------------------------------ failures

    def _timed_out(self) -> None:
        if self.response is None:
            self._fail_before_response(
                UpstreamError(504, f"upstream timed out ({self.deadline.phase})")
            )
        else:
            self._fail_body(Failure(UpstreamError(504, "upstream timed out mid-body")))
        self.conn.abort()

    def _fail_before_response(self, error: Exception) -> None:
        self.deadline.cancel()
        if self._unsettled():
            self.finished = True
            self._settle_failure(Failure(error))

    def _unsettled(self) -> bool:
        """Nobody was told of a response or a failure yet (nor was the Deferred cancelled)."""
        if self.announced:
            return False
        result = self.result
        return result is None or not result.called

    def _announce(self, response: UpstreamResponse) -> None:
        """Tell the listener (else fire ``result``) the response, once (no failure before)."""
        self.announced = True
        listener = self.listener
        if listener is not None:
            listener.response(response)
        else:
            assert self.result is not None
            self.result.callback(response)

    def _settle_failure(self, failure: Failure) -> None:
        """Tell the listener (else fire ``result``) the failure, once (no response before)."""
        self.announced = True
        listener = self.listener
        if listener is not None:
            listener.failed(failure)
        else:
            assert self.result is not None
            self.result.errback(failure)

    def cancel(self) -> None:
        """The listener's client went away: abandon, and tell the listener nothing more."""
        self.announced = True
        self.abandon()

    def _fail_body(self, failure: Failure) -> None:
        if self.finished:
            return
        self.finished = True
        self.deadline.cancel()
        self.conn.abort()
        if self.sink is not None:
            self.sink.fail(failure)
        else:
            self._body_failure = failure

    def connection_lost(self, reason: Failure) -> None:
        self.deadline.cancel()
        if self.producer is not None and self.sending:
            self.producer.stopProducing()
        if self.abandoned or self.finished:
            return
        if self.response is None:
            if not self.got_bytes and self.conn.reused:
                self.finished = True
                self._settle_failure(Failure(StaleConnection()))
            else:
                self._fail_before_response(
                    UpstreamError(502, f"upstream closed the connection: {reason.value!r}")
                )
            return
        if self.read_until_close and not self.complete:
            self.complete = True
            self.keep_alive = False
            self._maybe_finish()
            return
        if not self.complete:
            self._fail_body(reason)
