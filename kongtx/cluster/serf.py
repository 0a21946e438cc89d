# -*- test-case-name: tests.unit.test_cluster_serf -*-
"""The Serf layer on top of memberlist: clocks, intents, user events, queries, tags.

Why: Kong 0.9 nodes talk through Serf agents, and operators' tooling (``serf
members``, ``serf event``, ``serf reachability``) expects Serf semantics.  This
module is the part of Serf a member must implement to look like one
(notes/serf-wire.md §2): three Lamport clocks, join/leave intents that turn
memberlist's "dead" into ``left`` or ``failed``, user events deduplicated in a
512-slot ring and re-gossiped, answers to queries (``_serf_ping`` for
reachability), and the push/pull user state that repairs what gossip lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kongtx import log
from kongtx.clock import Clock
from kongtx.cluster import codec, queries
from kongtx.cluster.codec import DecodeError
from kongtx.cluster.memberlist import ALIVE, DEAD, LEFT, SUSPECT, Member, Memberlist

# serf message types (first byte of a memberlist user message)
LEAVE, JOIN, PUSH_PULL, USER_EVENT, QUERY, QUERY_RESPONSE = 0, 1, 2, 3, 4, 5
CONFLICT_RESPONSE, KEY_REQUEST, KEY_RESPONSE, RELAY = 6, 7, 8, 9

EVENT_BUFFER = 512
#: a user event's name + payload limit (Serf's hard limit; agents default to 512)
USER_EVENT_LIMIT = 9 * 1024


#: intents about unknown nodes kept at most (oldest forgotten first)
MAX_INTENTS = 1024

STATUS_ALIVE, STATUS_LEAVING, STATUS_LEFT, STATUS_FAILED = "alive", "leaving", "left", "failed"


class LamportClock:
    """Serf's Lamport clock: starts at 1; witnessing v sets it past v."""

    def __init__(self) -> None:
        self.value = 1

    def time(self) -> int:
        return self.value

    def increment(self) -> int:
        self.value += 1
        return self.value

    def witness(self, v: int) -> None:
        if v >= self.value:
            self.value = v + 1


@dataclass
class SerfMember:
    """A member as ``serf members`` shows it."""

    name: str
    addr: str
    port: int
    tags: dict[str, str] = field(default_factory=dict)
    status: str = STATUS_ALIVE
    status_ltime: int = 0
    vsn: bytes = codec.VSN

    @property
    def address(self) -> str:
        return f"{self.addr}:{self.port}"


def encode_tags(tags: dict[str, str]) -> bytes:
    """``0xff`` + msgpack map: Serf's tag encoding (protocol ≥ 3)."""
    return b"\xff" + codec.pack(tags)


def decode_tags(meta: bytes) -> dict[str, str]:
    """Tags from memberlist Meta; a bare string is an old agent's ``role``."""
    if meta[:1] == b"\xff":
        try:
            decoded = codec.unpack(meta[1:])
        except DecodeError:
            return {}
        if isinstance(decoded, dict):
            return {codec.text(k): codec.text(v) for k, v in decoded.items()}
        return {}
    return {"role": codec.text(meta)} if meta else {}


def user_msg(serf_type: int, body: Any) -> bytes:
    """A memberlist user message carrying one serf message."""
    return bytes([codec.USER, serf_type]) + codec.pack(body)


EventHandler = Callable[[str, bytes, int], None]


class Serf:
    """The serf delegate of one node's :class:`Memberlist`."""

    log = log.logger()

    def __init__(
        self, name: str, tags: dict[str, str], clock: Clock, on_event: EventHandler
    ) -> None:
        self.name = name
        self.tags = dict(tags)
        self.clock = clock
        self.on_event = on_event
        self.member_clock = LamportClock()
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self.members: dict[str, SerfMember] = {}
        self._events: dict[int, tuple[int, list[tuple[str, bytes]]]] = {}
        self.queries: dict[int, tuple[int, set[int]]] = {}
        #: queries we originated: ID -> (LTime, record callback)
        self.pending_queries: dict[int, tuple[int, queries.Record]] = {}
        self._intents: dict[str, tuple[int, bool]] = {}
        self.memberlist: Memberlist | None = None
        self.leaving = False

    def attach(self, memberlist: Memberlist) -> None:
        """Bind to the memberlist (they refer to each other) and register ourselves."""
        self.memberlist = memberlist
        me = memberlist.me
        self.members[self.name] = SerfMember(self.name, me.addr, me.port, dict(self.tags))
        self.members[self.name].status_ltime = self.member_clock.time()

    @property
    def ml(self) -> Memberlist:
        assert self.memberlist is not None
        return self.memberlist

    # ----------------------------------------------------------------- memberlist delegate

    def node_meta(self) -> bytes:
        return encode_tags(self.tags)

    def notify_join(self, m: Member) -> None:
        sm = self.members.get(m.name)
        if sm is None:
            sm = self.members[m.name] = SerfMember(m.name, m.addr, m.port)
        sm.addr, sm.port, sm.tags, sm.vsn = m.addr, m.port, decode_tags(m.meta), m.vsn
        sm.status = STATUS_ALIVE
        pending = self._intents.pop(m.name, None)
        if pending is not None and pending[0] > sm.status_ltime:
            sm.status_ltime = pending[0]
            if pending[1]:
                sm.status = STATUS_LEAVING
        self.log.info("member joined: {name} {address}", name=m.name, address=sm.address)

    def notify_update(self, m: Member) -> None:
        sm = self.members.get(m.name)
        if sm is not None:
            sm.tags = decode_tags(m.meta)

    def notify_leave(self, m: Member) -> None:
        sm = self.members.get(m.name)
        if sm is None:
            return
        sm.status = STATUS_LEFT if sm.status == STATUS_LEAVING or m.state == LEFT else STATUS_FAILED
        self.log.info("member {status}: {name}", status=sm.status, name=m.name)

    def notify_msg(self, payload: bytes) -> None:
        if not payload:
            raise DecodeError("empty user message")
        kind, body = payload[0], payload[1:]
        if kind in (JOIN, LEAVE, USER_EVENT, QUERY, QUERY_RESPONSE):
            f = codec.fields(codec.unpack(body))
            if kind == JOIN:
                if self.join_intent(codec.integer(f.get("LTime")), codec.text(f.get("Node"))):
                    self.ml.queue(bytes([codec.USER]) + payload)
            elif kind == LEAVE:
                if self.leave_intent(codec.integer(f.get("LTime")), codec.text(f.get("Node"))):
                    self.ml.queue(bytes([codec.USER]) + payload)
            elif kind == USER_EVENT:
                name, data = codec.text(f.get("Name")), codec.raw(f.get("Payload"))
                if self.user_event_received(codec.integer(f.get("LTime")), name, data):
                    self.ml.queue(bytes([codec.USER]) + payload)
            elif kind == QUERY:
                self.query_received(f, payload)
            else:
                queries.response(self, f)
        # relays, conflict and key messages only travel inside queries we do not send

    # ----------------------------------------------------------------- intents

    def join_intent(self, ltime: int, name: str) -> bool:
        """Serf's handleNodeJoinIntent; True when new (to re-gossip)."""
        self.member_clock.witness(ltime)
        sm = self.members.get(name)
        if sm is None:
            return self._remember_intent(name, ltime, False)
        if ltime <= sm.status_ltime:
            return False
        sm.status_ltime = ltime
        if sm.status == STATUS_LEAVING:
            sm.status = STATUS_ALIVE
        return True

    def leave_intent(self, ltime: int, name: str) -> bool:
        """Serf's handleNodeLeaveIntent: alive → leaving, failed → left; we refute."""
        self.member_clock.witness(ltime)
        if name == self.name and not self.leaving:
            self.broadcast_join(self.member_clock.time() + 1)
            return False
        sm = self.members.get(name)
        if sm is None:
            return self._remember_intent(name, ltime, True)
        if ltime <= sm.status_ltime:
            return False
        sm.status_ltime = ltime
        if sm.status == STATUS_ALIVE:
            sm.status = STATUS_LEAVING
            return True
        if sm.status == STATUS_FAILED:
            sm.status = STATUS_LEFT
            return True
        return False

    def _remember_intent(self, name: str, ltime: int, leave: bool) -> bool:
        """Intents about nodes memberlist has not seen yet wait here (Serf keeps them
        5 minutes), the newest per node; bounded so that a flood of made-up names cannot
        grow it.  True when ``ltime`` is newer than the intent waiting (to re-gossip)."""
        old = self._intents.get(name)
        if old is not None and old[0] >= ltime:
            return False
        self._intents.pop(name, None)
        self._intents[name] = (ltime, leave)
        while len(self._intents) > MAX_INTENTS:
            del self._intents[next(iter(self._intents))]
        return True

    def broadcast_join(self, ltime: int | None = None) -> None:
        """Tell everyone we are (still) in, with a fresh member-clock time."""
        if ltime is None:
            ltime = self.member_clock.time()
        self.member_clock.witness(ltime)
        me = self.members[self.name]
        me.status_ltime = max(me.status_ltime, ltime)
        msg = user_msg(JOIN, {"LTime": ltime, "Node": self.name})
        self.ml.queue(msg)
        self.ml.send_to_all(msg)

    def broadcast_leave(self, name: str) -> None:
        """A leave intent for ``name`` (ourselves on leave, a failed node on force-leave)."""
        ltime = self.member_clock.time()
        self.member_clock.increment()
        msg = user_msg(LEAVE, {"LTime": ltime, "Node": name, "Prune": False})
        if name == self.name:
            self.members[self.name].status = STATUS_LEAVING
            self.members[self.name].status_ltime = ltime
        else:
            self.leave_intent(ltime, name)
        self.ml.queue(msg)
        self.ml.send_to_all(msg)

    # ----------------------------------------------------------------- user events

    def user_event(self, name: str, payload: bytes) -> int:
        """Originate a user event (coalescing off); sent at once and gossiped. Returns LTime."""
        if len(name) + len(payload) > USER_EVENT_LIMIT:
            raise ValueError(f"user event exceeds the {USER_EVENT_LIMIT}-byte limit")
        ltime = self.event_clock.time()
        self.event_clock.increment()
        self._remember(ltime, name, payload)
        msg = user_msg(USER_EVENT, {"LTime": ltime, "Name": name, "Payload": payload, "CC": False})
        self.ml.queue(msg)
        self.ml.send_to_all(msg)
        return ltime

    def _remember(self, ltime: int, name: str, payload: bytes) -> bool:
        slot = self._events.get(ltime % EVENT_BUFFER)
        if slot is None or slot[0] != ltime:
            slot = (ltime, [])
            self._events[ltime % EVENT_BUFFER] = slot
        if (name, payload) in slot[1]:
            return False
        slot[1].append((name, payload))
        return True

    def user_event_received(self, ltime: int, name: str, payload: bytes) -> bool:
        """Serf's handleUserEvent: witness, drop too-old or seen, deliver. True when new."""
        self.event_clock.witness(ltime)
        if ltime + EVENT_BUFFER < self.event_clock.time():
            return False
        if not self._remember(ltime, name, payload):
            return False
        try:
            self.on_event(name, payload, ltime)
        except Exception:
            self.log.failure("user event {name} handler failed", name=name)
        return True

    # ----------------------------------------------------------------- queries

    def query_received(self, f: dict[str, Any], payload: bytes) -> None:
        """Answer a query (kongtx.cluster.queries): ack, ``_serf_ping``, re-gossip."""
        queries.received(self, f, payload)

    # ----------------------------------------------------------------- push/pull

    def local_state(self, join: bool) -> bytes:
        """Serf's pushPull user state (type byte 2 + msgpack)."""
        events = [
            {"LTime": lt, "Events": [{"Name": n, "Payload": p} for n, p in evs]}
            for lt, evs in sorted(self._events.values())
        ]
        state = {
            "LTime": self.member_clock.time(),
            "StatusLTimes": {m.name: m.status_ltime for m in self.members.values()},
            "LeftMembers": [m.name for m in self.members.values() if m.status == STATUS_LEFT],
            "EventLTime": self.event_clock.time(),
            "Events": events,
            "QueryLTime": self.query_clock.time(),
        }
        return bytes([PUSH_PULL]) + codec.pack(state)

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        """Serf's MergeRemoteState: clocks, intents, then buffered events."""
        if not data or data[0] != PUSH_PULL:
            raise DecodeError("not a serf push/pull state")
        f = codec.fields(codec.unpack(data[1:]))
        if codec.integer(f.get("LTime")) > 0:
            self.member_clock.witness(codec.integer(f.get("LTime")) - 1)
        times = {codec.text(k): codec.integer(v) for k, v in (f.get("StatusLTimes") or {}).items()}
        left = {codec.text(n) for n in (f.get("LeftMembers") or [])}
        for name, ltime in times.items():
            if name in left:
                self.leave_intent(ltime, name)
            else:
                self.join_intent(ltime, name)
        if codec.integer(f.get("EventLTime")) > 0:
            self.event_clock.witness(codec.integer(f.get("EventLTime")) - 1)
        if codec.integer(f.get("QueryLTime")) > 0:
            self.query_clock.witness(codec.integer(f.get("QueryLTime")) - 1)
        for entry in f.get("Events") or []:
            if entry is None:
                continue
            ef = codec.fields(entry)
            for ev in ef.get("Events") or []:
                evf = codec.fields(ev)
                self.user_event_received(
                    codec.integer(ef.get("LTime")),
                    codec.text(evf.get("Name")),
                    codec.raw(evf.get("Payload")),
                )

    # ----------------------------------------------------------------- views

    def status_of(self, name: str) -> str:
        """A member's status, memberlist's liveness taking precedence over stale intents."""
        sm = self.members[name]
        m = self.memberlist.members.get(name) if self.memberlist else None
        if (
            m is not None
            and m.state in (ALIVE, SUSPECT)
            and sm.status in (STATUS_LEFT, STATUS_FAILED)
        ):
            return STATUS_ALIVE
        if m is not None and m.state == DEAD and sm.status == STATUS_ALIVE:
            return STATUS_FAILED
        return sm.status

    def member_rows(self) -> list[dict[str, Any]]:
        """``[{name, address, status, tags}]`` as Kong's ``GET /cluster`` shows them."""
        return [
            {
                "name": sm.name,
                "address": sm.address,
                "status": self.status_of(sm.name),
                "tags": dict(sm.tags),
            }
            for sm in sorted(self.members.values(), key=lambda s: s.name)
        ]
