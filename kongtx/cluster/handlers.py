# -*- test-case-name: tests.unit.test_cluster_swim -*-
"""How a memberlist node answers each UDP message (dispatch for Memberlist).

Why separate: these are the protocol's reflexes (ack a ping at once, relay an
indirect ping, hand state notices to the state machine) and read best as one
table; the state machine itself lives in kongtx.cluster.memberlist.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import TimeoutError as DeferredTimeout

from kongtx.cluster import codec
from kongtx.cluster.codec import DecodeError

if TYPE_CHECKING:
    from kongtx.cluster.memberlist import Memberlist


def handle_packet(ml: Memberlist, data: bytes, addr: tuple[str, int], keys: Any) -> None:
    """Dispatch every message of one datagram; raises DecodeError if malformed."""
    for msg in codec.open_packet(data, keys):
        handle_message(ml, msg, addr)


def handle_message(ml: Memberlist, msg: bytes, addr: tuple[str, int]) -> None:
    """One message (type byte + body), from UDP or a TCP stream."""
    kind = msg[0]
    if kind == codec.USER:
        ml.delegate.notify_msg(msg[1:])
        return
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise DecodeError(f"unexpected message type {kind}")
    handler(ml, codec.fields(codec.unpack(msg[1:])), addr)


def _on_ping(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    node = codec.text(f.get("Node"))
    if node and node != ml.name:
        return  # memberlist drops pings meant for another node at our address
    reply_to = addr
    source = codec.raw(f.get("SourceAddr"))
    if len(source) == 4 and f.get("SourcePort"):
        reply_to = (socket.inet_ntoa(source), codec.integer(f.get("SourcePort")))
    ack = codec.encode(codec.ACK, {"SeqNo": codec.integer(f.get("SeqNo")), "Payload": b""})
    ml.send_raw(ack, reply_to)


def _on_indirect(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    target = (socket.inet_ntoa(codec.raw(f.get("Target"))), codec.integer(f.get("Port")))
    their_seq = codec.integer(f.get("SeqNo"))
    reply_to = addr
    source = codec.raw(f.get("SourceAddr"))
    if len(source) == 4 and f.get("SourcePort"):
        reply_to = (socket.inet_ntoa(source), codec.integer(f.get("SourcePort")))
    seq = ml.next_seq()
    waiting = ml.expect(seq, ml.profile.probe_timeout)
    ping = {"SeqNo": seq, "Node": codec.text(f.get("Node")), **ml.source_fields()}
    ml.send_raw(codec.encode(codec.PING, ping), target)
    want_nack = bool(f.get("Nack"))

    def acked(_: Any) -> None:
        ml.send_raw(codec.encode(codec.ACK, {"SeqNo": their_seq, "Payload": b""}), reply_to)

    def missed(failure: Any) -> None:
        failure.trap(DeferredTimeout)
        if want_nack:
            ml.send_raw(codec.encode(codec.NACK, {"SeqNo": their_seq}), reply_to)

    waiting.addCallbacks(acked, missed)


def _on_ack(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    entry = ml.pending.pop(codec.integer(f.get("SeqNo")), None)
    if entry is not None:
        d, timer = entry
        if timer.active():
            timer.cancel()
        d.callback(codec.raw(f.get("Payload")))


def _on_nack(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    """A helper could not reach the target either: evidence that we ourselves are fine."""
    seq = codec.integer(f.get("SeqNo"))
    if seq in ml.pending:
        ml.nacks[seq] = ml.nacks.get(seq, 0) + 1


def _on_alive(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    ml.alive(
        codec.text(f.get("Node")),
        codec.integer(f.get("Incarnation")),
        socket.inet_ntoa(codec.raw(f.get("Addr"))),
        codec.integer(f.get("Port")),
        codec.raw(f.get("Meta")),
        codec.raw(f.get("Vsn")),
    )


def _on_suspect(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    ml.suspect(
        codec.text(f.get("Node")),
        codec.integer(f.get("Incarnation")),
        codec.text(f.get("From")),
    )


def _on_dead(ml: Memberlist, f: dict[str, Any], addr: tuple[str, int]) -> None:
    ml.dead(
        codec.text(f.get("Node")),
        codec.integer(f.get("Incarnation")),
        codec.text(f.get("From")),
    )


_HANDLERS: dict[int, Callable[[Memberlist, dict[str, Any], tuple[str, int]], None]] = {
    codec.PING: _on_ping,
    codec.INDIRECT_PING: _on_indirect,
    codec.ACK: _on_ack,
    codec.NACK: _on_nack,
    codec.ALIVE: _on_alive,
    codec.SUSPECT: _on_suspect,
    codec.DEAD: _on_dead,
}
