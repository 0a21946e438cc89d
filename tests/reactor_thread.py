"""Run coroutines on a real reactor from plain (synchronous) pytest tests.

Why: the store suites talk to real files and servers, so they need a running
reactor (sqlite's thread pool hands results back through ``callFromThread``;
txpostgres and cassandra-driver need real I/O), while pytest tests are plain
functions.  The global reactor runs once per test session in a daemon thread
(no signal handlers: it is not the main thread), and :func:`run` hands a
coroutine to it and blocks the *test* thread, never the reactor, until the
result arrives or a timeout passes.

Usage::

    from tests.reactor_thread import run
    row = run(store.insert("apis", {...}))
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

T = TypeVar("T")

_lock = threading.Lock()
_thread: threading.Thread | None = None


def reactor() -> Any:
    """The global reactor, started in its background thread if it is not running yet."""
    global _thread
    from twisted.internet import reactor as _reactor

    with _lock:
        if _thread is None:
            started = threading.Event()
            _reactor.callWhenRunning(started.set)
            _thread = threading.Thread(
                target=_reactor.run,
                kwargs={"installSignalHandlers": False},
                name="test-reactor",
                daemon=True,
            )
            _thread.start()
            if not started.wait(30):
                raise RuntimeError("the test reactor did not start within 30 s")
            atexit.register(stop)
    return _reactor


def stop() -> None:
    """Stop the background reactor (at interpreter exit; a stopped reactor cannot restart)."""
    global _thread
    from twisted.internet import reactor as _reactor

    with _lock:
        thread, _thread = _thread, None
    if thread is not None and thread.is_alive():
        _reactor.callFromThread(_reactor.stop)
        thread.join(10)


def call(fn: Callable[[], Awaitable[T] | T], timeout: float = 60.0) -> T:
    """Call ``fn()`` on the reactor thread; wait for its (awaited) result; re-raise its error.

    Use this when even creating the awaitable must happen on the reactor thread
    (anything that touches reactor state when called).
    """
    r = reactor()
    results: queue.Queue[tuple[bool, Any]] = queue.Queue()
    holder: list[Deferred[Any]] = []

    def start() -> None:
        try:
            value = fn()
            d: Deferred[Any]
            if isinstance(value, Deferred):
                d = value
            elif isinstance(value, Coroutine):
                d = ensureDeferred(value)
            else:
                results.put((True, value))
                return
        except BaseException as e:
            results.put((False, Failure(e)))
            return
        holder.append(d)
        d.addCallbacks(lambda v: results.put((True, v)), lambda f: results.put((False, f)))

    r.callFromThread(start)
    try:
        ok, value = results.get(timeout=timeout)
    except queue.Empty:
        if holder:
            r.callFromThread(holder[0].cancel)
        raise TimeoutError(f"no result from the reactor within {timeout} s") from None
    if ok:
        return value  # type: ignore[no-any-return]
    failure: Failure = value
    failure.raiseException()
    raise AssertionError("unreachable")


def run(awaitable: Awaitable[T], timeout: float = 60.0) -> T:
    """Await ``awaitable`` (a coroutine or Deferred) on the reactor thread and return its result.

    A coroutine object runs no code until awaited, so creating it on the test
    thread is safe; it is first stepped on the reactor thread.
    """
    return call(lambda: awaitable, timeout)
