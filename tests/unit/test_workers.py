"""Worker processes (kongtx.workers): spawning, fan-out, restarts, reloads, the control line.

The process spawner is a fake that records what would be spawned; time is a
``task.Clock``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock as TaskClock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from kongtx.clock import Clock
from kongtx.workers import (
    FIRST_SOCKET_FD,
    WorkerControl,
    WorkerFailed,
    WorkerPool,
    WorkerProcess,
    encode,
    worker_command,
    worker_count,
)


class FakeProcess:
    """The transport of one spawned process: remembers writes and signals."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[bytes] = []
        self.signals: list[str] = []

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == 0
        self.written.append(data)

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def messages(self) -> list[dict[str, Any]]:
        """What the master sent after the ``serve`` line every worker gets at its spawn."""
        sent = [json.loads(line) for line in self.written]
        assert {"op": "serve"} in sent
        return sent[sent.index({"op": "serve"}) + 1 :]

    def at_spawn(self) -> list[dict[str, Any]]:
        """What the master sent before ``serve``."""
        sent = [json.loads(line) for line in self.written]
        return sent[: sent.index({"op": "serve"})]


class FakeSpawner:
    """Stands for IReactorProcess: records spawns, connects a FakeProcess."""

    def __init__(self) -> None:
        self.spawned: list[tuple[WorkerProcess, list[str], dict[int, Any]]] = []
        self._pid = 100

    def spawnProcess(
        self, protocol: Any, executable: str, args: Any, env: Any = None, **kw: Any
    ) -> FakeProcess:
        self._pid += 1
        process = FakeProcess(self._pid)
        protocol.makeConnection(process)
        self.spawned.append((protocol, list(args), kw["childFDs"]))
        return process


def ready(worker: WorkerProcess) -> None:
    worker.childDataReceived(1, encode({"op": "ready"}))


def exit_(worker: WorkerProcess, code: int = 0) -> None:
    reason = ProcessDone(0) if code == 0 else ProcessTerminated(code)
    worker.processEnded(Failure(reason))


def pool(count: int = 2) -> tuple[WorkerPool, FakeSpawner, TaskClock]:
    spawner = FakeSpawner()
    clock = TaskClock()
    return (
        WorkerPool(spawner, Clock(clock), ["python", "-m", "w"], [7, 9], count, env={}),  # type: ignore[arg-type]
        spawner,
        clock,
    )


def assert_called(d: Any) -> None:
    """The Deferred has fired (a function, so mypy does not narrow ``called``)."""
    assert d.called


def proc(worker: WorkerProcess) -> FakeProcess:
    transport: Any = worker.transport
    assert isinstance(transport, FakeProcess)
    return transport


def test_worker_count() -> None:
    """``auto`` is one worker per core; a number is taken as is."""
    assert worker_count("auto", 2) == 2
    assert worker_count("auto", 0) == 1
    assert worker_count(3, 2) == 3


def test_worker_command() -> None:
    """The worker argv: this module, the socket count, the conf path and prefix."""
    argv = worker_command(2, "/etc/kong.conf", "/prefix")
    assert argv[1:] == ["-m", "kongtx.workers", "2", "/etc/kong.conf", "/prefix"]
    assert worker_command(1, None, None)[-2:] == ["", ""]


def test_start_spawns_workers_with_the_sockets() -> None:
    """Each worker inherits every listening socket from fd 3 on; start fires when all are ready."""
    p, spawner, _ = pool()
    started = p.start()
    assert len(spawner.spawned) == 2
    for _, args, fds in spawner.spawned:
        assert args == ["python", "-m", "w"]
        assert fds == {0: "w", 1: "r", 2: "r", FIRST_SOCKET_FD: 7, FIRST_SOCKET_FD + 1: 9}
    assert not started.called
    ready(p.workers[0])
    assert not started.called
    ready(p.workers[1])
    assert started.called


def test_broadcast_reaches_every_worker() -> None:
    """An invalidation is sent to every live worker, once each."""
    p, _, _ = pool()
    p.start()
    p.invalidate(["apis:1", "plugins:*"])
    p.invalidate([])
    for worker in p.workers:
        assert proc(worker).messages() == [{"op": "invalidate", "keys": ["apis:1", "plugins:*"]}]


def test_start_fails_when_a_worker_cannot_start() -> None:
    """start() fails (no unhandled error) when a first worker exits before it is ready."""
    p, _, clock = pool(1)
    errors: list[Failure] = []
    p.start().addErrback(errors.append)
    exit_(p.workers[0], 1)
    assert len(errors) == 1 and errors[0].check(WorkerFailed)
    clock.advance(p.restart_delay)  # and it is tried again
    assert len(p.workers) == 1


def test_dead_worker_is_restarted() -> None:
    """A worker that dies is replaced (at once when it had lived a while)."""
    p, spawner, clock = pool()
    p.start()
    for worker in p.workers:
        ready(worker)
    clock.advance(60)
    dead = p.workers[0]
    exit_(dead, 9)
    assert dead not in p.workers
    assert len(p.workers) == 2 and len(spawner.spawned) == 3
    assert p.restarts == 1


def test_young_death_restarts_after_a_delay() -> None:
    """A worker that dies right after its start is replaced only after restart_delay."""
    p, spawner, clock = pool()
    p.start()
    for worker in p.workers:
        ready(worker)
    exit_(p.workers[0], 1)
    assert len(spawner.spawned) == 2
    clock.advance(p.restart_delay)
    assert len(spawner.spawned) == 3 and len(p.workers) == 2


def test_reload_starts_new_generation_before_retiring_the_old() -> None:
    """Reload: new workers first; only when all accept are the old ones told to quit."""
    p, spawner, _ = pool()
    p.start()
    old = list(p.workers)
    for worker in old:
        ready(worker)
    done = p.reload()
    new = [w for w in p.workers if w not in old]
    assert len(new) == 2 and all(w.generation == 2 for w in new)
    assert all(proc(w).messages() == [] for w in old)  # nothing told yet
    ready(new[0])
    assert all(proc(w).messages() == [] for w in old)
    ready(new[1])
    assert all(proc(w).messages() == [{"op": "quit", "timeout": 30.0}] for w in old)
    assert not done.called
    for worker in old:
        exit_(worker)
    assert_called(done)
    assert p.workers == new and len(spawner.spawned) == 4  # retired workers not restarted


def test_reload_failure_keeps_the_old_generation() -> None:
    """A new worker that dies before it is ready: the old workers keep serving."""
    p, _, _ = pool(1)
    p.start()
    old = p.workers[0]
    ready(old)
    done = p.reload()
    new = p.workers[1]
    errors: list[Failure] = []
    done.addErrback(errors.append)
    exit_(new, 1)
    assert len(errors) == 1 and errors[0].check(WorkerFailed)
    assert p.workers == [old] and p.generation == 1
    assert proc(old).messages() == []


def test_graceful_stop_waits_then_kills_laggards() -> None:
    """stop(): quit is sent; a worker still there after timeout + 5 s is killed."""
    p, _, clock = pool()
    p.start()
    stopped = p.stop(timeout=10.0)
    for worker in p.workers:
        assert proc(worker).messages() == [{"op": "quit", "timeout": 10.0}]
    first, second = p.workers
    exit_(first)
    clock.advance(15.0)
    assert proc(second).signals == ["KILL"]
    exit_(second, 9)
    assert stopped.called and p.workers == []


def test_hard_stop_kills() -> None:
    """stop(graceful=False) kills at once and restarts nothing."""
    p, spawner, _ = pool(1)
    p.start()
    worker = p.workers[0]
    p.stop(graceful=False)
    assert proc(worker).signals == ["KILL"]
    exit_(worker, 9)
    assert len(spawner.spawned) == 1


def control() -> tuple[WorkerControl, StringTransport, list[Any]]:
    calls: list[Any] = []
    c = WorkerControl(
        lambda keys: calls.append(("invalidate", keys)),
        lambda: calls.append(("flush",)),
        lambda timeout: calls.append(("quit", timeout)),
    )
    transport = StringTransport()
    c.makeConnection(transport)
    return c, transport, calls


def test_control_applies_master_messages() -> None:
    """Invalidate, flush and quit lines reach the worker's callbacks; junk is ignored."""
    c, transport, calls = control()
    c.announce_ready()
    assert json.loads(transport.value()) == {"op": "ready"}
    c.dataReceived(
        encode({"op": "invalidate", "keys": ["apis:1", 5]})
        + b"not json\n"
        + encode({"op": "flush"})
        + encode({"op": "quit", "timeout": 3})
        + encode({"op": "quit", "timeout": 3})
    )
    assert calls == [("invalidate", ["apis:1"]), ("flush",), ("quit", 3.0)]


def test_control_master_gone_quits() -> None:
    """When the master's end of the pipe closes, the worker drains and leaves."""
    c, _, calls = control()
    c.connectionLost(Failure(ProcessDone(0)))
    assert calls == [("quit", 5.0)]


def test_fan_out_forwards_every_cache_invalidation() -> None:
    """Invalidate, prefix invalidation and flush of the master's cache reach the workers."""
    from kongtx.cache import Cache
    from kongtx.workers import fan_out

    p, _, clock = pool(1)
    p.start()
    cache = Cache(Clock(clock))
    cache.set("apis:1", {"id": "1"})
    cache.set("plugins:a", 1)
    fan_out(cache, p)
    cache.invalidate("apis:1")
    cache.invalidate_prefix("plugins:")
    cache.flush()
    assert cache.peek("apis:1") == (False, None) and cache.peek("plugins:a")[0] is False
    assert proc(p.workers[0]).messages() == [
        {"op": "invalidate", "keys": ["apis:1"]},
        {"op": "invalidate", "keys": ["plugins:*"]},
        {"op": "flush"},
    ]


class FakeSocket:
    def __init__(self, fd: int = 11) -> None:
        self.closed = False
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.closed = True


def proxy_workers(
    monkeypatch: Any, ssl: bool = False, health: Any = None, stream: Any = None
) -> tuple[Any, Any, Any]:
    """A ProxyWorkers on fake sockets and a fake spawner: (service, spawner, bound addresses)."""
    import kongtx.workers.service as service_module
    from kongtx.cache import Cache
    from kongtx.config import Address
    from kongtx.workers import ProxyWorkers

    bound: list[tuple[str, int]] = []

    def bind(host: str, port: int) -> FakeSocket:
        bound.append((host, port))
        return FakeSocket(11 + len(bound))

    monkeypatch.setattr(service_module, "bind_listener", bind)
    monkeypatch.setattr(service_module, "share_local_counters", lambda prefix, create: None)
    spawner = FakeSpawner()
    clock = TaskClock()
    config: Any = type(
        "C",
        (),
        {
            "proxy_listen": Address("127.0.0.1", 8000),
            "proxy_listen_ssl": Address("127.0.0.1", 8443),
            "ssl": ssl,
            "prefix": "/p",
        },
    )()
    cache = Cache(Clock(clock))
    service = ProxyWorkers(
        config, cache, Clock(clock), spawner, None, 2, health=health, stream=stream
    )
    return service, spawner, bound


def test_proxy_workers_service(monkeypatch: Any) -> None:
    """The node-side service binds proxy_listen, spawns workers, reloads them, drains on stop."""
    service, spawner, bound = proxy_workers(monkeypatch)
    service.startService()
    assert bound == [("127.0.0.1", 8000)]
    assert [fds[FIRST_SOCKET_FD] for _, _, fds in spawner.spawned] == [12, 12]
    assert spawner.spawned[0][1][-3:] == ["proxy", "", "/p"]
    assert service.pool is not None
    for worker in list(service.pool.workers):
        ready(worker)
    assert_called(service.ready)
    service.cache.invalidate("apis:x")
    assert all(
        proc(w).messages() == [{"op": "invalidate", "keys": ["apis:x"]}]
        for w in service.pool.workers
    )
    sock = service.socket
    reloaded = Deferred.fromCoroutine(service.reload(service.config))
    assert len(spawner.spawned) == 4
    stopped = service.stopService()
    for worker in list(service.pool.workers):
        exit_(worker)
    assert_called(stopped)
    assert sock.closed
    reloaded.addErrback(lambda _: None)


def test_proxy_workers_serve_tls_and_move_on_reload(monkeypatch: Any) -> None:
    """With ssl on both sockets are inherited (roles in argv); a moved proxy_listen gets a
    new socket for the new generation, and the old one closes once the old workers left."""
    from kongtx.config import Address

    service, spawner, bound = proxy_workers(monkeypatch, ssl=True)
    service.startService()
    assert bound == [("127.0.0.1", 8000), ("127.0.0.1", 8443)]
    protocol, argv, fds = spawner.spawned[0]
    assert argv[-3] == "proxy,proxy_ssl"
    assert (fds[FIRST_SOCKET_FD], fds[FIRST_SOCKET_FD + 1]) == (12, 13)
    for worker in list(service.pool.workers):
        ready(worker)
    old_plain, old_tls = service.sockets["proxy"][1], service.sockets["proxy_ssl"][1]
    moved_config: Any = type(service.config)()
    moved_config.proxy_listen = Address("127.0.0.1", 9000)
    reloaded = Deferred.fromCoroutine(service.reload(moved_config))
    fresh = service.pool.workers[2:]
    assert [fds[FIRST_SOCKET_FD] for _, _, fds in spawner.spawned[2:]] == [14, 14]
    for worker in fresh:
        ready(worker)
    for worker in service.pool.workers[:2]:
        exit_(worker)
    assert_called(reloaded)
    assert reloaded.result == ["proxy"]
    assert old_plain.closed and not old_tls.closed
    assert service.sockets["proxy"][0] == Address("127.0.0.1", 9000)


def test_proxy_workers_share_health_verdicts(monkeypatch: Any) -> None:
    """The node's verdicts reach every worker (and a worker spawned later); a worker's
    verdict is applied to the node's table, which forwards it to all of them."""
    from kongtx.balancer.health_state import HealthState

    health = HealthState()
    health.set("u1", "10.0.0.1:80", False, "manual")
    service, spawner, _ = proxy_workers(monkeypatch, health=health)
    service.startService()
    first, second = service.pool.workers
    verdict = {"op": "health", "upstream_id": "u1", "address": "10.0.0.1:80", "healthy": False}
    assert proc(first).at_spawn() == [verdict]  # brought up to date before it serves
    health.set("u1", "10.0.0.2:80", False, "active")
    first.childDataReceived(
        1,
        encode({"op": "health", "upstream_id": "u1", "address": "10.0.0.3:80", "healthy": False}),
    )
    assert not health.is_healthy("u1", "10.0.0.3:80")
    for worker in (first, second):
        addresses = [m["address"] for m in proc(worker).messages() if m["op"] == "health"]
        assert addresses == ["10.0.0.2:80", "10.0.0.3:80"]


class RecordingStream:
    """Stands for the cluster's InvalidationStream: records publish and retire calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def publish(self, origin: str) -> None:
        self.calls.append(("publish", origin))

    def retire(self, origin: str) -> None:
        self.calls.append(("retire", origin))


def test_a_workers_write_reaches_the_node_every_worker_and_the_cluster(monkeypatch: Any) -> None:
    """``changed`` from a worker: the node's cache drops the keys, every worker is told to,
    the stream publishes the worker's origin; when the worker exits its origin is retired.
    An origin that is not the sender's (``-worker-<pid>``) is not published."""
    stream = RecordingStream()
    service, _, _ = proxy_workers(monkeypatch, stream=stream)
    service.startService()
    first, second = service.pool.workers
    ready(first)
    ready(second)
    service.cache.set("oauth2_token:abc", {"id": 1})
    service.cache.set("plugins_chain:x", 1)
    origin = f"node-worker-{first.pid}"
    first.childDataReceived(
        1,
        encode(
            {"op": "changed", "origin": origin, "keys": ["oauth2_token:abc", "plugins_chain:*"]}
        ),
    )
    assert "oauth2_token:abc" not in service.cache and "plugins_chain:x" not in service.cache
    for worker in (first, second):
        sent = [m for m in proc(worker).messages() if m["op"] == "invalidate"]
        assert sent == [
            {"op": "invalidate", "keys": ["oauth2_token:abc"]},
            {"op": "invalidate", "keys": ["plugins_chain:*"]},
        ]
    second.childDataReceived(1, encode({"op": "changed", "origin": origin, "keys": []}))
    assert stream.calls == [("publish", origin)]
    exit_(first)
    exit_(second)
    assert stream.calls == [("publish", origin), ("retire", origin)]


def test_worker_dao_listener_sends_changed_lines() -> None:
    """A worker's commit becomes one ``changed`` line with its origin and the cache keys."""
    from kongtx.invalidation import keys_for
    from kongtx.workers.worker import changes_to

    sent: list[dict[str, Any]] = []
    listener = changes_to(sent.append, "n-worker-5")
    token = {"id": "t", "access_token": "abc", "credential_id": "c"}
    listener("oauth2_tokens", "delete", token, None)
    assert sent == [
        {
            "op": "changed",
            "origin": "n-worker-5",
            "keys": keys_for("oauth2_tokens", token, None),
        }
    ]
    assert sent[0]["keys"] == ["oauth2_token:abc"]


def test_worker_stats_are_summed_and_kept_after_exit() -> None:
    """/status and /metrics of a master: the workers' latest reports plus those of gone ones."""
    from kongtx.metrics import Metrics
    from kongtx.workers.stats import SummedMetrics, WorkerStats

    def dumped(n: int) -> dict[str, Any]:
        m = Metrics()
        ctx: Any = type(
            "Ctx",
            (),
            {
                "api": {"name": "a"},
                "status": 200,
                "proxy_latency": 1,
                "upstream_latency": 2,
                "request_latency": 3,
                "request_size": 10,
                "response_size": 20,
            },
        )()
        for _ in range(n):
            m.observe(ctx)
        return m.dump()

    stats = WorkerStats()
    a, b = object(), object()
    server = {"connections_active": 1, "connections_accepted": 2, "total_requests": 3}
    stats.received(a, {"op": "stats", "server": server, "metrics": dumped(3)})
    stats.received(b, {"op": "stats", "server": server, "metrics": dumped(2)})
    stats.received(b, {"op": "stats", "server": server, "metrics": dumped(4)})
    assert stats.server_stats() == {
        "connections_active": 2,
        "connections_accepted": 4,
        "total_requests": 6,
    }
    stats.exited(a)
    assert stats.server_stats() == {
        "connections_active": 1,
        "connections_accepted": 4,
        "connections_handled": 0,
        "total_requests": 6,
    }
    text = SummedMetrics(stats).render()
    assert 'kong_http_requests_total{api="a",code="200"} 7' in text
    assert 'kong_bandwidth_bytes{type="ingress",api="a"} 70' in text


def test_control_extra_ops_and_sending() -> None:
    """Ops beyond invalidate/flush/quit go to their handler; the worker can send lines."""
    got: list[dict[str, Any]] = []
    c = WorkerControl(lambda keys: None, lambda: None, lambda t: None, {"health": got.append})
    transport = StringTransport()
    c.makeConnection(transport)
    c.dataReceived(encode({"op": "health", "x": 1}) + encode({"op": "unknown"}))
    assert got == [{"op": "health", "x": 1}]
    c.send({"op": "stats"})
    assert json.loads(transport.value()) == {"op": "stats"}


def test_worker_socket_roles() -> None:
    """A worker's first argument: a count of plain sockets, or their roles."""
    from kongtx.workers.control import socket_roles

    assert socket_roles("2") == ["proxy", "proxy"]
    assert socket_roles("proxy,proxy_ssl") == ["proxy", "proxy_ssl"]
    assert worker_command(["proxy", "proxy_ssl"], None, None)[3] == "proxy,proxy_ssl"


def test_accept_one_at_a_time() -> None:
    """A worker's port accepts one connection per readiness event, however many it took before."""
    from kongtx.workers import accept_one_at_a_time

    class Port:
        numberAccepts = 100
        seen: list[int] = []

        def doRead(self) -> None:
            self.seen.append(self.numberAccepts)
            self.numberAccepts += 20  # what Twisted does after a full batch

    port = Port()
    accept_one_at_a_time(port)
    port.doRead()
    port.doRead()
    assert port.seen == [1, 1]


def test_worker_stderr_goes_to_the_master_log(monkeypatch: Any) -> None:
    """A worker's stderr is a pipe: each complete line is logged by the master, with its pid."""
    import kongtx.workers.master as master_module

    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def info(self, text: str, **kw: Any) -> None:
            logged.append((text, kw))

    monkeypatch.setattr(master_module, "log", Log())
    p, spawner, _ = pool(1)
    p.start()
    worker = p.workers[0]
    worker.childDataReceived(2, b"first line\nsec")
    worker.childDataReceived(2, b"ond\n\n")
    assert [kw["line"] for _, kw in logged] == ["first line", "second"]
    assert logged[0][1]["pid"] == proc(worker).pid


def test_proxy_workers_reloads_one_after_the_other(monkeypatch: Any) -> None:
    """A second reload (SIGHUP twice) waits until the first generation change is done."""
    service, spawner, _ = proxy_workers(monkeypatch)
    service.startService()
    for worker in list(service.pool.workers):
        ready(worker)
    first = Deferred.fromCoroutine(service.reload(service.config))
    second = Deferred.fromCoroutine(service.reload(service.config))
    assert len(spawner.spawned) == 4  # only the first reload's generation
    for worker in service.pool.workers[2:]:
        ready(worker)
    for worker in list(service.pool.workers[:2]):
        exit_(worker)
    assert_called(first)
    assert len(spawner.spawned) == 6  # now the second's
    for worker in service.pool.workers[2:]:
        ready(worker)
    for worker in list(service.pool.workers[:2]):
        exit_(worker)
    assert_called(second)
    assert service.pool.generation == 3
