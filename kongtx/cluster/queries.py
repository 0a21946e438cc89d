# -*- test-case-name: tests.unit.test_cluster_serf -*-
"""How a member answers Serf queries (``serf reachability``, ``serf query``, ``serf keys``).

Why a member must: ``serf reachability`` counts the nodes that ack its ``_serf_ping``
query, and ``serf keys`` fails unless every member answers the key queries.  A query
is deduplicated by (LTime, ID), re-gossiped unless flagged not to, filtered by node
name or tag regex, acked when asked, and internal ``_serf_*`` queries get their answer
by UDP at the requester's address (SF:serf/serf.go handleQuery).
"""

from __future__ import annotations

import math
import random
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from kongtx.cluster import codec

if TYPE_CHECKING:
    from kongtx.cluster.serf import Serf

QUERY_ACK, QUERY_NO_BROADCAST = 1, 2
QUERY_BUFFER = 512
#: serf message types used here
QUERY, QUERY_RESPONSE, KEY_RESPONSE = 4, 5, 8
#: serf's QueryTimeoutMult: a query waits this many gossip intervals × ⌈log10(n+1)⌉
TIMEOUT_MULT = 16

#: (record type "ack" | "response", from node, payload)
Record = Callable[[str, str, bytes], None]
_KEY_QUERIES = frozenset(
    {"_serf_install-key", "_serf_use-key", "_serf_remove-key", "_serf_list-keys"}
)


def _msg(serf_type: int, body: Any) -> bytes:
    return bytes([codec.USER, serf_type]) + codec.pack(body)


def received(serf: Serf, f: dict[str, Any], payload: bytes) -> None:
    """Answer a query: ack when asked, respond to ``_serf_ping``, re-gossip new ones."""
    ltime, qid = codec.integer(f.get("LTime")), codec.integer(f.get("ID"))
    serf.query_clock.witness(ltime)
    if ltime + QUERY_BUFFER < serf.query_clock.time():
        return
    slot = serf.queries.get(ltime % QUERY_BUFFER)
    if slot is None or slot[0] != ltime:
        slot = (ltime, set())
        serf.queries[ltime % QUERY_BUFFER] = slot
    if qid in slot[1]:
        return
    slot[1].add(qid)
    flags = codec.integer(f.get("Flags"))
    if not flags & QUERY_NO_BROADCAST:
        serf.ml.queue(bytes([codec.USER]) + payload)
    if not matches(serf, f.get("Filters") or []):
        return
    raw_addr = codec.raw(f.get("Addr"))
    if len(raw_addr) != 4:
        return
    dest = (socket.inet_ntoa(raw_addr), codec.integer(f.get("Port")))
    base = {"LTime": ltime, "ID": qid, "From": serf.name}
    if flags & QUERY_ACK:
        serf.ml.send_raw(_msg(QUERY_RESPONSE, {**base, "Flags": QUERY_ACK, "Payload": None}), dest)
    name = codec.text(f.get("Name"))
    answer = internal_answer(name)
    if answer is not None:
        serf.ml.send_raw(_msg(QUERY_RESPONSE, {**base, "Flags": 0, "Payload": answer}), dest)


def internal_answer(name: str) -> bytes | None:
    if name == "_serf_ping":
        return b""
    if name in _KEY_QUERIES:
        return bytes([KEY_RESPONSE]) + codec.pack(
            {
                "Result": False,
                "Message": "kongtx manages keys by configuration",
                "Keys": None,
                "PrimaryKey": "",
            }
        )
    return None


def matches(serf: Serf, filters: list[Any]) -> bool:
    for raw_filter in filters:
        data = codec.raw(raw_filter)
        if not data:
            continue
        decoded = codec.unpack(data[1:])
        if data[0] == 0 and isinstance(decoded, list):
            if serf.name not in {codec.text(n) for n in decoded}:
                return False
        elif data[0] == 1:
            tf = codec.fields(decoded)
            value = serf.tags.get(codec.text(tf.get("Tag")))
            try:
                if value is None or not re.match(codec.text(tf.get("Expr")), value):
                    return False
            except re.error:
                return False
    return True


def default_timeout(serf: Serf) -> float:
    """Serf's DefaultQueryTimeout: gossip interval × 16 × ⌈log10(n+1)⌉."""
    n = max(len(serf.members), 1)
    return serf.ml.profile.gossip_interval * TIMEOUT_MULT * math.ceil(math.log10(n + 1))


def originate(
    serf: Serf,
    name: str,
    payload: bytes,
    on_record: Record,
    timeout: float | None = None,
    want_ack: bool = True,
    filters: list[bytes] | None = None,
) -> Deferred[None]:
    """Send a query to every member; ``on_record`` hears acks and responses until the
    returned Deferred fires at the timeout.  We answer our own query directly."""
    wait = timeout if timeout and timeout > 0 else default_timeout(serf)
    ltime = serf.query_clock.time()
    serf.query_clock.increment()
    qid = random.getrandbits(32)
    me = serf.ml.me
    body = {
        "LTime": ltime,
        "ID": qid,
        "Addr": socket.inet_aton(me.addr),
        "Port": me.port,
        "SourceNode": serf.name,
        "Filters": filters or None,
        "Flags": QUERY_ACK if want_ack else 0,
        "RelayFactor": 0,
        "Timeout": int(wait * 1e9),
        "Name": name,
        "Payload": payload,
    }
    serf.queries.setdefault(ltime % QUERY_BUFFER, (ltime, set()))[1].add(qid)
    seen: set[tuple[str, str]] = set()
    done: Deferred[None] = Deferred()

    def record(kind: str, source: str, data: bytes) -> None:
        if (kind, source) not in seen and not done.called:
            seen.add((kind, source))
            on_record(kind, source, data)

    def finish() -> None:
        serf.pending_queries.pop(qid, None)
        if not done.called:
            done.callback(None)

    serf.pending_queries[qid] = (ltime, record)
    if matches(serf, filters or []):
        if want_ack:
            record("ack", serf.name, b"")
        answer = internal_answer(name)
        if answer is not None:
            record("response", serf.name, answer)
    msg = _msg(QUERY, body)
    serf.ml.queue(msg)
    serf.ml.send_to_all(msg)
    serf.clock.call_later(wait, finish)
    return done


def response(serf: Serf, f: dict[str, Any]) -> None:
    """A query response or ack for a query we originated (others are ignored)."""
    pending = serf.pending_queries.get(codec.integer(f.get("ID")))
    if pending is None or pending[0] != codec.integer(f.get("LTime")):
        return
    kind = "ack" if codec.integer(f.get("Flags")) & QUERY_ACK else "response"
    pending[1](kind, codec.text(f.get("From")), codec.raw(f.get("Payload")))
