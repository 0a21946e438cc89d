"""kongtx.reactor: events dispatched without the log context, the end-of-turn hook.

Real sockets on 127.0.0.1 (and socket pairs), each reactor built for its test and run
for a bounded time.  The connection tests run on Twisted's ``EPollReactor`` too: the
same outcome on both is the point.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtx.clock import Clock

if sys.platform != "linux":  # pragma: no cover
    pytest.skip("kongtx's reactor needs epoll", allow_module_level=True)

from twisted.internet.epollreactor import EPollReactor

from kongtx.reactor import LeanReactor, install_unless_chosen

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: seconds a reactor may run before a test gives up on it
LIMIT = 5.0

REACTORS = [EPollReactor, LeanReactor]


def spin(reactor: Any, done: Callable[[], bool]) -> None:
    """Turn ``reactor`` (timed calls, then a poll of at most 10 ms) until ``done()``."""
    deadline = time.monotonic() + LIMIT
    while not done():
        assert time.monotonic() < deadline, "the reactor ran out of time"
        reactor.runUntilCurrent()
        reactor.doIteration(0.01)


class Recorder(Protocol):
    """Keeps what it received and why its connection ended."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason


class Echo(Recorder):
    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        assert self.transport is not None
        self.transport.write(data)


def serve(reactor: Any, protocol: Callable[[], Protocol]) -> tuple[Any, list[Any]]:
    """A listening port on 127.0.0.1 and the list of the protocols it built."""
    built: list[Any] = []

    def build() -> Protocol:
        p = protocol()
        built.append(p)
        return p

    port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
    return port, built


@pytest.fixture(params=REACTORS, ids=lambda cls: cls.__name__)
def reactor(request: pytest.FixtureRequest) -> Iterator[Any]:
    r = request.param()
    yield r
    for selectable in r.removeAll():
        selectable.connectionLost(Failure(error.ConnectionDone()))
    r._poller.close()
    for fd in (r.waker.i, r.waker.o):
        try:
            socket.socket(fileno=fd).close()
        except OSError:
            pass


def test_reads_and_writes_are_dispatched(reactor: Any) -> None:
    """An echo server and a client on the reactor: both directions, in order."""
    port, servers = serve(reactor, Echo)
    client = Recorder()
    reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
    payload = b"x" * 300_000  # more than one read, writes that wait for writability

    def send() -> None:
        assert client.transport is not None
        client.transport.write(payload)

    reactor.callLater(0.05, send)
    spin(reactor, lambda: len(client.data) >= len(payload))
    assert client.data == payload
    assert servers[0].data == payload
    port.stopListening()


def test_peer_closing_is_connection_done(reactor: Any) -> None:
    port, servers = serve(reactor, Recorder)
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
    peer.sendall(b"last words")
    peer.close()
    spin(reactor, lambda: bool(servers) and servers[0].reason is not None)
    assert servers[0].data == b"last words"
    assert servers[0].reason.check(error.ConnectionDone)
    port.stopListening()


def test_reset_is_connection_lost(reactor: Any) -> None:
    port, servers = serve(reactor, Recorder)
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
    spin(reactor, lambda: bool(servers) and servers[0].made)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # linger 0: a reset
    spin(reactor, lambda: servers[0].reason is not None)
    assert servers[0].reason.check(error.ConnectionLost)
    assert not servers[0].reason.check(error.ConnectionDone)
    port.stopListening()


class Exploding(Recorder):
    def dataReceived(self, data: bytes) -> None:
        raise ZeroDivisionError("boom")


def test_exception_in_data_received_drops_that_connection_only(reactor: Any) -> None:
    """The protocol's error is logged, its connection dropped; the reactor goes on."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        port, servers = serve(reactor, Exploding)
        bad = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
        bad.sendall(b"hello")
        spin(reactor, lambda: bool(servers) and servers[0].reason is not None)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert servers[0].reason.check(ZeroDivisionError)
    assert bad.recv(10) == b""  # closed by the server
    bad.close()
    if isinstance(reactor, LeanReactor):  # (Twisted's goes through the legacy log.err)
        failures = [e for e in events if "log_failure" in e]
        assert [e["log_failure"].type for e in failures] == [ZeroDivisionError]
        assert failures[0]["prefix"].startswith("Exploding,0,127.0.0.1")
    # the reactor still serves
    port.stopListening()
    port, echoes = serve(reactor, Echo)
    client = Recorder()
    reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
    reactor.callLater(0.05, lambda: client.transport.write(b"still here"))
    spin(reactor, lambda: client.data == b"still here")
    port.stopListening()


class AbortsTheOther(Recorder):
    """On its first bytes, aborts the other connection (read in the same poll)."""

    other: AbortsTheOther | None = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.abortConnection()  # type: ignore[attr-defined]
            self.other.other = None


def test_no_read_after_an_abort_earlier_in_the_same_poll(reactor: Any) -> None:
    """``abortConnection`` from an earlier event of the poll: the other reads nothing more."""
    port, servers = serve(reactor, AbortsTheOther)
    peers = [
        socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
        for _ in range(2)
    ]
    spin(reactor, lambda: len(servers) == 2 and all(s.made for s in servers))
    servers[0].other, servers[1].other = servers[1], servers[0]
    for peer in peers:
        peer.sendall(b"ping")
    time.sleep(0.05)  # both readable before the one poll below
    reactor.doIteration(1.0)
    assert sorted(s.data for s in servers) == [b"", b"ping"]
    aborted = next(s for s in servers if not s.data)
    spin(reactor, lambda: aborted.reason is not None)
    assert aborted.reason.check(error.ConnectionAborted)
    for peer in peers:
        peer.close()
    port.stopListening()


class WriteOnly(FileDescriptor):
    """A socket registered for writing only, recording why it was disconnected."""

    def __init__(self, reactor: Any, sock: socket.socket) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.reason: Failure | None = None
        self.writable = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def doWrite(self) -> None:
        self.writable += 1

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.reactor.removeWriter(self)


def test_hang_up_without_input_when_not_reading_is_connection_lost(reactor: Any) -> None:
    """EPOLLHUP with no EPOLLIN on a descriptor that was not reading: ConnectionLost."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.shutdown(socket.SHUT_WR)
    peer.close()  # both directions closed: EPOLLHUP on ours
    w = WriteOnly(reactor, ours)
    reactor.addWriter(w)
    spin(reactor, lambda: w.reason is not None)
    assert w.reason.check(error.ConnectionLost)
    ours.close()


def test_the_event_bits_are_epolls() -> None:
    import select

    from kongtx import reactor as module

    assert module._IN == select.EPOLLIN
    assert module._OUT == select.EPOLLOUT
    assert module._DISCONNECTED == select.EPOLLHUP | select.EPOLLERR


# -- reads done in the dispatch (kongtx.reactor._read_tcp)


def test_an_endpoint_connection_reads_into_the_wrapped_protocol(reactor: Any) -> None:
    """An endpoint's ``_WrappingProtocol`` is skipped on reads: same bytes, same end."""
    port, servers = serve(reactor, Echo)
    client = Recorder()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=LIMIT)
    connected: list[Any] = []
    endpoint.connect(Factory.forProtocol(lambda: client)).addCallback(connected.append)
    spin(reactor, lambda: bool(connected))
    assert connected == [client]
    assert client.transport is not None
    assert type(client.transport.protocol).__name__ == "_WrappingProtocol"  # type: ignore[attr-defined]
    client.transport.write(b"through the wrapper")
    spin(reactor, lambda: client.data == b"through the wrapper")
    servers[0].transport.loseConnection()
    spin(reactor, lambda: client.reason is not None)
    assert client.reason.check(error.ConnectionDone)
    port.stopListening()


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    """Keeps writing after the peer's half-close."""

    read_lost = False

    def readConnectionLost(self) -> None:
        self.read_lost = True
        assert self.transport is not None
        self.transport.write(b"after your FIN")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


def test_a_half_close_reaches_read_connection_lost(reactor: Any) -> None:
    """End of file on a half-closeable protocol: ``readConnectionLost``, the writes go on."""
    port, servers = serve(reactor, HalfCloser)
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
    peer.sendall(b"request")
    peer.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: bool(servers) and servers[0].reason is not None)
    assert servers[0].data == b"request"
    assert servers[0].read_lost
    assert peer.recv(100) == b"after your FIN"
    peer.close()
    port.stopListening()


def test_read_tcp_follows_do_read(lean: LeanReactor) -> None:
    """Nothing to read is nothing; a socket closed behind Twisted's back has no descriptor."""
    from kongtx.reactor import _read_tcp

    port, servers = serve(lean, Recorder)
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=LIMIT)
    spin(lean, lambda: bool(servers) and servers[0].made)
    transport: Any = servers[0].transport
    assert _read_tcp(transport) is None  # EWOULDBLOCK
    assert servers[0].reason is None and servers[0].data == b""
    peer.sendall(b"abc")
    time.sleep(0.05)
    assert _read_tcp(transport) is None
    assert servers[0].data == b"abc"
    lean.removeReader(transport)
    transport.socket.close()
    assert isinstance(_read_tcp(transport), error.ConnectionFdescWentAway)
    peer.close()
    port.stopListening()


# -- the end-of-turn hook


class Reader(FileDescriptor):
    """One end of a socket pair, reading and reporting what it read."""

    def __init__(self, reactor: Any, sock: socket.socket, record: Callable[[bytes], None]):
        super().__init__(reactor)
        self.sock = sock
        self.record = record

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.record(self.sock.recv(100))


@pytest.fixture
def lean() -> Iterator[LeanReactor]:
    r = LeanReactor()
    yield r
    r.removeAll()
    r._poller.close()


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(2)]
    for ours, _ in made:
        ours.setblocking(False)
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_turn_end_runs_after_the_polls_events_in_order(
    pairs: list[tuple[socket.socket, socket.socket]], lean: LeanReactor
) -> None:
    seen: list[str] = []

    def record(name: str) -> Callable[[bytes], None]:
        def on_read(data: bytes) -> None:
            seen.append(f"read {name}")
            lean.at_turn_end(lambda: seen.append(f"end {name}"))

        return on_read

    for i, (ours, peer) in enumerate(pairs):
        lean.addReader(Reader(lean, ours, record(str(i))))
        peer.send(b"x")
    lean.doIteration(1.0)  # both readable already: one poll, two events
    assert seen == ["read 0", "read 1", "end 0", "end 1"]


def test_turn_end_queued_while_running_still_runs_before_the_next_sleep(
    lean: LeanReactor,
) -> None:
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        lean.at_turn_end(lambda: seen.append("second"))

    lean.at_turn_end(first)
    lean.doIteration(None)  # would block forever if the waiting calls did not wake it
    assert seen == ["first"]
    lean.doIteration(None)
    assert seen == ["first", "second"]


def test_turn_end_runs_on_a_turn_without_events() -> None:
    """Queued by a timed call (no I/O at all): runs in that turn, the reactor not asleep."""
    r = LeanReactor()
    seen: list[float] = []
    r.callLater(0.01, lambda: r.at_turn_end(lambda: seen.append(r.seconds())))
    r.callLater(0.02, lambda: r.at_turn_end(r.stop))
    start = r.seconds()
    limit = r.callLater(LIMIT, r.stop)
    r.run(installSignalHandlers=False)
    assert len(seen) == 1
    assert r.seconds() - start < LIMIT / 2
    limit.cancel()


def test_a_failing_turn_end_call_is_logged_and_the_others_run(lean: LeanReactor) -> None:
    events: list[LogEvent] = []
    seen: list[int] = []
    globalLogPublisher.addObserver(events.append)
    try:
        lean.at_turn_end(lambda: seen.append(1))
        lean.at_turn_end(lambda: 1 // 0)  # type: ignore[func-returns-value]
        lean.at_turn_end(lambda: seen.append(3))
        lean.doIteration(0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert seen == [1, 3]
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [ZeroDivisionError]


# -- timed calls: Twisted's runUntilCurrent skipped when nothing is due


class Now:
    """A settable ``seconds()`` for a real :class:`LeanReactor` (its timed calls' clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_timed_call_fires_when_due_not_before(lean: LeanReactor) -> None:
    now = Now()
    lean.seconds = now  # type: ignore[method-assign]
    fired: list[float] = []
    lean.callLater(1.0, lambda: fired.append(now.now))
    lean.runUntilCurrent()  # new: inserted, not due
    assert fired == []
    now.now = 1000.999
    lean.runUntilCurrent()  # nothing new, not due yet: skipped
    assert fired == []
    assert lean.timeout() == pytest.approx(0.001)
    now.now = 1001.0
    lean.runUntilCurrent()
    assert fired == [1001.0]
    assert lean.timeout() is None


def test_a_reset_or_cancelled_call_is_honoured_on_the_skipping_path(lean: LeanReactor) -> None:
    now = Now()
    lean.seconds = now  # type: ignore[method-assign]
    fired: list[str] = []
    later = lean.callLater(1.0, lambda: fired.append("later"))
    gone = lean.callLater(0.5, lambda: fired.append("gone"))
    lean.runUntilCurrent()
    later.reset(2.0)  # pushed back: the heap still says 1001, then it waits
    gone.cancel()
    now.now = 1001.5
    lean.runUntilCurrent()
    assert fired == []
    assert lean.timeout() == pytest.approx(0.5)
    sooner = lean.callLater(0.1, lambda: fired.append("sooner"))
    assert lean.timeout() == pytest.approx(0.1)  # a new call counts at once
    now.now = 1002.0
    lean.runUntilCurrent()
    assert fired == ["sooner", "later"]
    assert not sooner.active()


def test_a_call_from_a_thread_runs_in_the_next_turn(lean: LeanReactor) -> None:
    seen: list[str] = []
    lean.callFromThread(seen.append, "queued")
    lean.runUntilCurrent()
    assert seen == ["queued"]


def test_stop_still_fires_the_shutdown(lean: LeanReactor) -> None:
    seen: list[str] = []
    lean.addSystemEventTrigger("during", "shutdown", lambda: seen.append("shutdown"))
    lean.startRunning(installSignalHandlers=False)
    lean.stop()
    lean.runUntilCurrent()
    assert seen == ["shutdown"]


def test_an_error_in_a_turn_is_logged_and_the_loop_goes_on() -> None:
    r = LeanReactor()
    events: list[LogEvent] = []
    seen: list[str] = []
    r.callLater(0, lambda: r.at_turn_end(lambda: seen.append("after")))
    original = r.doIteration
    failed: list[bool] = []

    def once_failing(timeout: float | None) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("boom")
        original(timeout)

    r.doIteration = once_failing  # type: ignore[method-assign]
    r.callLater(0.01, r.stop)
    limit = r.callLater(LIMIT, r.stop)
    globalLogPublisher.addObserver(events.append)
    try:
        r.run(installSignalHandlers=False)
    finally:
        globalLogPublisher.removeObserver(events.append)
    limit.cancel()
    assert failed == [True] and seen == ["after"]
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [RuntimeError]
    assert any(e.get("log_format") == "Main loop terminated." for e in events)


# -- Clock.at_turn_end on kongtx's reactor


def test_clock_at_turn_end_uses_the_reactor_hook_no_timer(lean: LeanReactor) -> None:
    clock = Clock(lean)
    seen: list[str] = []
    clock.at_turn_end(lambda: seen.append("a"))
    clock.at_turn_end(lambda: clock.at_turn_end(lambda: seen.append("c")))
    clock.at_turn_end(lambda: seen.append("b"))
    assert lean.getDelayedCalls() == []
    assert clock.pending == 3
    lean.doIteration(0)
    assert seen == ["a", "b"]
    lean.runUntilCurrent()  # what was queued meanwhile: the same turn's end
    assert seen == ["a", "b", "c"]
    assert clock.pending == 0


def test_clock_cancel_all_drops_waiting_turn_end_calls(lean: LeanReactor) -> None:
    clock = Clock(lean)
    seen: list[str] = []
    clock.at_turn_end(lambda: seen.append("dropped"))
    clock.cancel_all()
    assert clock.pending == 0
    clock.at_turn_end(lambda: seen.append("after"))
    lean.doIteration(0)
    assert seen == ["after"]


# -- how it is chosen (a fresh interpreter each: installing is once per process)


def python(code: str) -> str:
    """What ``code`` prints in a new interpreter on this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_installed_when_no_reactor_was_chosen() -> None:
    """What tap.makeService and the workers call first."""
    assert (
        python(
            "from kongtx.reactor import install_unless_chosen; install_unless_chosen(); "
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        == "LeanReactor"
    )


def test_an_explicit_choice_wins() -> None:
    """``twistd -r poll``: installed while twistd parses its options, before makeService."""
    assert (
        python(
            "from twisted.internet import pollreactor; pollreactor.install(); "
            "from kongtx.reactor import install_unless_chosen; install_unless_chosen(); "
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        == "PollReactor"
    )


def test_twistd_knows_it_by_name() -> None:
    """``twistd -r kongtx`` (twisted/plugins/kongtx_reactor.py) installs it."""
    assert (
        python(
            "from twisted.application.reactors import installReactor; "
            "installReactor('kongtx'); "
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        == "LeanReactor"
    )


def test_install_unless_chosen_keeps_an_installed_reactor() -> None:
    """``twistd -r <other>`` installed its reactor first: it stays."""
    import twisted.internet.reactor as installed  # noqa: F401 (the test process's)

    before = sys.modules["twisted.internet.reactor"]
    install_unless_chosen()
    assert sys.modules["twisted.internet.reactor"] is before
