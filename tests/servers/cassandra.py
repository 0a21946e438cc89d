"""A private single-node Apache Cassandra 5.0 for the test session, from Maven jars.

``.ci/install-servers`` copies ``cassandra-all`` and its runtime dependencies (see
``.ci/cassandra/pom.xml``) into ``KONG_TEST_CASSANDRA_LIB`` (default
``~/.cache/kongtx/cassandra``).  ``server()`` writes a one-node ``cassandra.yaml`` on
127.0.0.1 with free ports, a small heap and its data in a temporary directory, runs
``CassandraDaemon`` in the foreground with the JVM 17 options Cassandra's own scripts
pass, waits for the native port, and kills it at exit.  Never downloads: without the jars
the tests skip loudly (or fail when ``KONG_TEST_REQUIRE`` names cassandra).
``KONG_TEST_CASSANDRA_HOST`` (and ``_PORT``) points at an existing server instead.

``tls_server()`` is the opt-in for TLS tests: a second private node, started on first use
only (the session node above is untouched; ~60 s and another 512 MB heap), whose native
port speaks TLS only (``client_encryption_options`` with Cassandra 5.0's
``PEMBasedSslContextFactory``), with a certificate for 127.0.0.1/localhost signed by a
throwaway CA (``ca_file``).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers import free_port, once, unavailable, wait_until

START_TIMEOUT = float(os.environ.get("KONG_TEST_CASSANDRA_START_TIMEOUT", "180"))

# jvm-server.options + jvm17-server.options of Cassandra 5.0 (what bin/cassandra adds on Java 17).
JVM_OPTIONS = """
-Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true -Dio.netty.allocator.maxOrder=11
--add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-exports java.base/java.lang.ref=ALL-UNNAMED
--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports java.management/com.sun.jmx.remote.security=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports java.sql/java.sql=ALL-UNNAMED --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
--add-opens java.base/java.lang.module=ALL-UNNAMED --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens java.base/jdk.internal.ref=ALL-UNNAMED --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens java.base/jdk.internal.math=ALL-UNNAMED --add-opens java.base/jdk.internal.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.base/java.io=ALL-UNNAMED
--add-opens java.base/java.lang.reflect=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED
--add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
-ea -da:net.openhft... -XX:+UseThreadPriorities -Xss256k -XX:+PerfDisableSharedMem
-Djava.net.preferIPv4Stack=true -Dchronicle.analytics.disable=true
-Xms512M -Xmx512M -XX:+UseG1GC -XX:MaxGCPauseMillis=300 -XX:+ExitOnOutOfMemoryError
-XX:ActiveProcessorCount=2 -Dcassandra.available_processors=2
"""

YAML = """\
cluster_name: kongtx-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {native_port}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
data_file_directories: [{run}/data]
commitlog_directory: {run}/commitlog
saved_caches_directory: {run}/saved_caches
hints_directory: {run}/hints
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
auto_snapshot: false
hinted_handoff_enabled: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
memtable_flush_writers: 1
native_transport_max_threads: 32
read_request_timeout: 10000ms
write_request_timeout: 10000ms
range_request_timeout: 20000ms
request_timeout: 20000ms
"""

TLS_YAML = """\
client_encryption_options:
  enabled: true
  optional: false
  require_client_auth: false
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: {keystore}
  truststore: {truststore}
"""

LOGBACK = """\
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender"><file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern></encoder></appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


def lib_dir() -> str:
    """Where .ci/install-servers put the jars."""
    return os.environ.get("KONG_TEST_CASSANDRA_LIB") or os.path.expanduser(
        "~/.cache/kongtx/cassandra"
    )


def native_ready(host: str, port: int, tls: bool = False) -> bool:
    """Whether the CQL native transport answers an OPTIONS frame with SUPPORTED.

    ``tls``: the port speaks TLS only (the certificate is not checked here).
    """
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            s = _unverified_tls().wrap_socket(raw) if tls else raw
            s.sendall(struct.pack(">BBhBI", 4, 0, 0, 5, 0))
            header = s.recv(9)
            return len(header) >= 5 and header[0] == 0x84 and header[4] == 0x06
    except OSError:
        return False


def _unverified_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class CassandraServer:
    """Contact point and port, plus the process when this harness owns it."""

    host: str
    port: int
    version: str = ""
    run: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    storage_port: int = 0
    #: the CA that signed the TLS-only native port's certificate; None: no TLS (the default)
    ca_file: str | None = None

    @property
    def owned(self) -> bool:
        """Whether this harness started the server (so it may stop and restart it)."""
        return self.run is not None

    def store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``CassandraStore`` (connection part)."""
        return {"contact_points": [self.host], "port": self.port}

    def _argv(self, lib: str) -> list[str]:
        assert self.run is not None
        jamm = sorted(glob.glob(os.path.join(lib, "jamm-*.jar")))
        java = shutil.which("java") or "java"
        argv = [java, f"@{self.run}/jvm.args"]
        if jamm:
            argv.append(f"-javaagent:{jamm[-1]}")
        argv += [
            f"-Dcassandra.config=file://{self.run}/cassandra.yaml",
            f"-Dcassandra.storagedir={self.run}",
            f"-Dcassandra.logdir={self.run}/logs",
            f"-Dlogback.configurationFile={self.run}/logback.xml",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            f"-Djava.io.tmpdir={self.run}/tmp",
            "-cp",
            os.path.join(lib, "*"),
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        return argv

    def start(self) -> None:
        """Start the (owned) server and wait for its native port."""
        assert self.run is not None
        lib = lib_dir()
        out = open(os.path.join(self.run, "logs", "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            self._argv(lib),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        proc = self.proc
        ok = wait_until(
            lambda: native_ready(self.host, self.port, self.ca_file is not None),
            START_TIMEOUT,
            0.5,
            alive=lambda: proc.poll() is None,
        )
        if not ok:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(
                f"Cassandra did not open its native port in {START_TIMEOUT:.0f}s: {tail}"
            )

    def stop(self) -> None:
        """Kill the (owned) server process (a throwaway node needs no drain).

        The cached admin session is dropped too: after a restart the driver would
        otherwise wait out its reconnection back-off before setup queries work.
        """
        _forget_admin_session()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP the (owned) server: connections stay open, nothing answers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def log_tail(self, n: int = 3000) -> str:
        """The end of stdout.log and system.log, for failure messages."""
        text = ""
        for name in ("stdout.log", "system.log"):
            path = os.path.join(self.run or "", "logs", name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f"--- {name}\n" + f.read()[-n:]
        return text

    def destroy(self) -> None:
        """Kill the server and remove its directory."""
        self.stop()
        if self.run is not None:
            shutil.rmtree(self.run, ignore_errors=True)
            self.run = None


def _tls_yaml(run: str) -> tuple[str, str]:
    """``client_encryption_options`` for a TLS-only native port, and the CA file."""
    from tests.servers.certs import TestCA

    issued = TestCA(os.path.join(run, "tls")).issue("node")
    keystore = os.path.join(run, "tls", "keystore.pem")  # the key, then its certificate
    with open(keystore, "w") as out:
        for path in (issued.key, issued.cert):
            with open(path) as f:
                out.write(f.read())
    return TLS_YAML.format(keystore=keystore, truststore=issued.ca), issued.ca


def _start_owned(tls: bool = False) -> CassandraServer:
    lib = lib_dir()
    if not glob.glob(os.path.join(lib, "cassandra-all-5.0.*.jar")):
        unavailable(
            "cassandra",
            f"no cassandra-all-5.0.*.jar in {lib} (run .ci/install-servers, or set KONG_TEST_CASSANDRA_LIB)",
        )
    if shutil.which("java") is None:
        unavailable("cassandra", "no java on PATH (Cassandra 5.0 needs Java 17)")
    run = tempfile.mkdtemp(prefix="kongtx-cassandra-")
    for d in ("logs", "tmp"):
        os.makedirs(os.path.join(run, d))
    srv = CassandraServer(host="127.0.0.1", port=free_port(), run=run, storage_port=free_port())
    with open(os.path.join(run, "cassandra.yaml"), "w") as f:
        f.write(YAML.format(run=run, storage_port=srv.storage_port, native_port=srv.port))
        if tls:
            encryption, srv.ca_file = _tls_yaml(run)
            f.write(encryption)
    with open(os.path.join(run, "logback.xml"), "w") as f:
        f.write(LOGBACK)
    with open(os.path.join(run, "jvm.args"), "w") as f:
        f.write(JVM_OPTIONS)
    began = time.monotonic()
    try:
        srv.start()
    except (RuntimeError, OSError) as e:
        srv.destroy()
        unavailable("cassandra", str(e))
    srv.version = _release_version(srv)
    print(f"\n[kongtx tests] Cassandra started in {time.monotonic() - began:.1f}s", file=sys.stderr)
    return srv


def _release_version(srv: CassandraServer) -> str:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    cluster = Cluster(
        [srv.host],
        port=srv.port,
        protocol_version=5,
        connect_timeout=20,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=DCAwareRoundRobinPolicy(), request_timeout=60
            )
        },
        ssl_context=_unverified_tls() if srv.ca_file else None,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=30).one()
        return str(row.release_version)
    finally:
        cluster.shutdown()


_server: CassandraServer | None = None
_failure: str | None = None
_guard = threading.Lock()


def server() -> CassandraServer:
    """The session's Cassandra (started on first use); skips or fails when impossible."""
    global _server, _failure
    with _guard:
        if _server is not None:
            return _server
        if _failure is not None:
            unavailable("cassandra", _failure)
        host = os.environ.get("KONG_TEST_CASSANDRA_HOST")
        try:
            if host:
                srv = CassandraServer(
                    host=host, port=int(os.environ.get("KONG_TEST_CASSANDRA_PORT", "9042"))
                )
                try:
                    srv.version = _release_version(srv)
                except Exception as e:
                    unavailable("cassandra", f"KONG_TEST_CASSANDRA_HOST={host}: {e}")
            else:
                srv = _start_owned()
                atexit.register(srv.destroy)
        except pytest.skip.Exception as e:
            _failure = str(e)
            raise
        print(
            f"\n[kongtx tests] Cassandra {srv.version} on {srv.host}:{srv.port}"
            f" ({'private, ' + lib_dir() if srv.owned else 'from KONG_TEST_CASSANDRA_*'})",
            file=sys.stderr,
        )
        _server = srv
        return srv


_tls_server: list[CassandraServer] = []


def tls_server() -> CassandraServer:
    """A second private node whose native port speaks TLS only (see the module docstring).

    Started on first use, once per process, and killed at exit; separate from
    :func:`server` so that TLS tests change nothing for the others.
    """
    return once(_tls_server, _guard, lambda: _start_owned(tls=True))


@pytest.fixture(scope="session")
def cassandra_server() -> CassandraServer:
    """The session's Cassandra (see :func:`server`)."""
    return server()


_admin: Any = None
_shared: str | None = None
SHARED_KEYSPACE = "kt_contract"
#: tables a truncation between tests leaves alone (what migrations ran, the lock).
_KEEP = {"schema_migrations", "kongtx_locks"}


def admin_session() -> Any:
    """A blocking driver session for test setup (never used on the reactor thread)."""
    global _admin
    if _admin is None:
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy

        srv = server()
        cluster = Cluster(
            [srv.host],
            port=srv.port,
            protocol_version=5,
            connect_timeout=30,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=DCAwareRoundRobinPolicy(), request_timeout=60
                )
            },
        )
        _admin = cluster.connect()
        atexit.register(cluster.shutdown)
    return _admin


def drop_keyspace(srv: CassandraServer, keyspace: str) -> None:
    """Drop ``keyspace`` if it exists (retried: right after a restart the node may refuse)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            admin_session().execute(f'DROP KEYSPACE IF EXISTS "{keyspace}"')
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            _forget_admin_session()
            time.sleep(2)


def _forget_admin_session() -> None:
    global _admin
    if _admin is not None:
        session, _admin = _admin, None
        try:
            session.cluster.shutdown()
        except Exception:
            pass


def shared_keyspace(migrations: Any) -> str:
    """The session's migrated keyspace, emptied (tables truncated) for the next test.

    Creating the schema takes ~10 s on Cassandra, truncating it well under one, so the
    contract tests that do not test migrations share one keyspace.
    """
    global _shared
    session = admin_session()
    if _shared is None:
        from kongtx.clock import Clock
        from kongtx.store.cassandra import CassandraStore
        from kongtx.store.tables import TABLES
        from tests.reactor_thread import reactor, run

        srv = server()
        drop_keyspace(srv, SHARED_KEYSPACE)
        real = reactor()
        store = CassandraStore(
            **srv.store_kwargs(),
            keyspace=SHARED_KEYSPACE,
            timeout=20000,
            tables=TABLES,
            origin="harness",
            clock=Clock(real),
            reactor=real,
        )
        run(store.start())
        try:
            run(store.migrate(migrations), timeout=300)
        finally:
            run(store.stop())
        _shared = SHARED_KEYSPACE
        return _shared
    tables = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [_shared]
    )
    for row in tables:
        name = f'"{_shared}"."{row.table_name}"'
        # TRUNCATE waits for a flush; most tests touch few tables, so skip the empty ones
        if row.table_name not in _KEEP and session.execute(f"SELECT * FROM {name} LIMIT 1").one():
            session.execute(f"TRUNCATE {name}")
    return _shared
