"""A keep-alive upstream connection reads its responses with one parser while it can.

(kongtx.proxy.upstream_parsing.ResponseReader, per connection: its parser is kept
from response to response, and replaced after a response that leaves it mid-message:
a HEAD response, a parse error, bytes of another message.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from kongtx.proxy.upstream import UpstreamClient
from tests.unit.test_upstream_client import MemoryClient, Sink, _Base


class ReaderTests(_Base):
    def answered(
        self, client: UpstreamClient, response: bytes, method: str = "GET"
    ) -> tuple[Any, Any, Sink]:
        """One request on the (first) connection answered with ``response`` (one read):
        the parser that read it, the response, its body."""
        d = self.request(client, method=method)
        proto, _ = self.connections[0]
        parser = proto.reader.parser
        proto.dataReceived(response)
        sink = Sink()
        result = self.successResultOf(d)
        result.deliver(sink)
        return parser, result, sink

    def exchange(
        self, client: UpstreamClient, response: bytes, method: str = "GET"
    ) -> tuple[Any, Sink]:
        """:meth:`answered`: the parser and the body."""
        parser, _, sink = self.answered(client, response, method)
        return parser, sink

    def test_parser_kept_from_response_to_response(self) -> None:
        client = MemoryClient(self)
        first, sink = self.exchange(client, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert sink.data == b"ok" and sink.finished
        second, sink = self.exchange(client, b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        assert sink.finished and second is first
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        third, sink = self.exchange(client, chunked)
        assert sink.data == b"ab" and sink.finished and third is first
        assert len(self.connections) == 1

    def test_bodies_read_before_the_sink_are_each_exchanges_own(self) -> None:
        """Chunks read before the sink is attached wait in the exchange's own list (one
        without such chunks shares an empty list that nothing appends to)."""
        from kongtx.proxy import exchange as exchange_module

        client = MemoryClient(self)
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n"
        _, first = self.exchange(client, chunked + b"1\r\nb\r\n0\r\n\r\n")
        _, empty = self.exchange(client, b"HTTP/1.1 204 No Content\r\n\r\n")
        _, second = self.exchange(client, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\ncd")
        assert (first.data, empty.data, second.data) == (b"ab", b"", b"cd")
        assert first.finished and empty.finished and second.finished
        assert exchange_module._NOTHING_PENDING == []

    def test_after_a_head_response_a_new_parser_reads_the_next(self) -> None:
        """llhttp still awaits the HEAD response's body: the next response needs a new parser."""
        client = MemoryClient(self)
        first, sink = self.exchange(
            client, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method="HEAD"
        )
        assert sink.finished and sink.data == b""
        d = self.request(client)
        proto, _ = self.connections[0]
        assert proto.reader.parser is not first
        proto.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")
        response = self.successResultOf(d)
        assert response.status == 201 and response.length == 3
        sink = Sink()
        response.deliver(sink)
        assert sink.data == b"new" and sink.finished
        assert len(self.connections) == 1

    def test_after_bytes_of_another_message_a_new_parser(self) -> None:
        client = MemoryClient(self)
        first, sink = self.exchange(
            client, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 2"
        )
        assert sink.data == b"ok" and sink.finished
        d = self.request(client)
        proto, _ = self.connections[0]
        assert proto.reader.parser is not first
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        assert self.successResultOf(d).status == 200

    def test_bytes_of_another_message_in_the_same_read_change_nothing(self) -> None:
        """The response's head stays its own (not the next message's), and its end counts."""
        _, response, sink = self.answered(
            MemoryClient(self),
            b"HTTP/1.1 200 OK\r\nX-First: 1\r\nContent-Length: 1\r\n\r\na"
            b"HTTP/1.1 500 Oops\r\nX-Second: 2\r\nContent-Length: 1\r\n\r\nb",
        )
        assert response.status == 200 and response.reason == ""
        assert response.headers.get("x-first") == "1" and response.headers.get("x-second") is None
        assert sink.data == b"a" and sink.finished

    def test_the_upstreams_own_reason_phrase_is_kept(self) -> None:
        """nginx (so Kong 0.9) relays the upstream's status line: a phrase of its own is
        kept (latin-1), a standard one is not (the front-end has its line ready)."""
        client = MemoryClient(self)
        _, response, _ = self.answered(
            client, b"HTTP/1.1 200 Totally Fine\r\nContent-Length: 0\r\n\r\n"
        )
        assert response.status == 200 and response.reason == "Totally Fine"
        _, response, _ = self.answered(
            client, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        )
        assert response.status == 404 and response.reason == ""
        _, response, _ = self.answered(
            client, b"HTTP/1.1 299 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n"
        )
        assert response.status == 299 and response.reason == "\xe9t\xe9"

    def test_trailer_fields_never_join_the_head(self) -> None:
        client = MemoryClient(self)
        first, response, sink = self.answered(
            client,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n"
            b"2\r\nab\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        assert response.headers.get("x-head") == "1" and response.headers.get("x-trailer") is None
        assert sink.data == b"ab" and sink.finished
        second, sink = self.exchange(client, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc")
        assert sink.data == b"c" and second is first

    def test_body_bytes_after_a_head_response_ignored(self) -> None:
        _, sink = self.exchange(
            MemoryClient(self), b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", "HEAD"
        )
        assert sink.finished and sink.data == b""

    def test_interim_response_then_the_next_on_the_same_parser(self) -> None:
        client = MemoryClient(self)
        first, sink = self.exchange(
            client, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
        )
        assert sink.data == b"a" and sink.finished
        second, sink = self.exchange(client, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
        assert sink.data == b"b" and second is first

    def test_connection_lost_breaks_the_reader_parser_cycle(self) -> None:
        client = MemoryClient(self)
        self.exchange(client, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        proto, _ = self.connections[0]
        reader = proto.reader
        proto.connectionLost(Failure(ConnectionDone()))
        assert proto.reader is None and reader.parser is None
        d = self.request(client)  # the pool forgot it: a new connection
        assert len(self.connections) == 2
        self.connections[1][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert self.successResultOf(d).status == 200


class PoolTests(_Base):
    """The pool never hands out a connection it closed (or is closing)."""

    def pooled_once(self, client: UpstreamClient) -> Any:
        d = self.request(client)
        proto, _ = self.connections[0]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d).deliver(Sink())
        assert client._idle[proto.key] == [proto]
        return proto

    def test_idle_timeout_closes_and_the_next_request_connects(self) -> None:
        client = MemoryClient(self, read_timeout=1000)
        client.idle_timeout = 5.0
        proto = self.pooled_once(client)
        self.reactor.advance(5.0)  # idle too long: closed (still listed until it is lost)
        assert proto.closing and self.connections[0][1].disconnecting
        d = self.request(client)
        assert len(self.connections) == 2
        self.connections[1][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert self.successResultOf(d).status == 200

    def test_bytes_on_an_idle_connection_abort_it(self) -> None:
        client = MemoryClient(self)
        proto = self.pooled_once(client)
        proto.dataReceived(b"HTTP/1.1 200 OK\r\n")  # nobody asked: never reused
        assert proto.closing
        self.request(client)
        assert len(self.connections) == 2

    def test_lost_connection_leaves_the_pool(self) -> None:
        client = MemoryClient(self)
        proto = self.pooled_once(client)
        proto.connectionLost(Failure(ConnectionDone()))
        assert client._idle[proto.key] == [] and proto.closing
