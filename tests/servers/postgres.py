"""A private PostgreSQL for the test session (Debian's binaries, a temp cluster).

``server()`` starts it once per process (``initdb`` into a temporary directory as the
unprivileged ``postgres`` user when we are root, ``postgres`` on a free 127.0.0.1 port
with its unix socket inside that directory, user and database ``kong``) and removes it
at exit.  ``KONG_TEST_PG_HOST`` (with ``_PORT``, ``_USER``, ``_PASSWORD``,
``_DATABASE``) points the tests at an existing server instead; that one cannot be
stopped and restarted, so the outage tests skip there.

``tls_server()`` is the opt-in for TLS tests: a second private server, started on first
use only (the session server above is untouched), with ``ssl = on`` and a certificate
for 127.0.0.1/localhost signed by a throwaway CA (``ca_file``).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.servers import free_port, once, unavailable

PASSWORD = "kong"


def find_bindir() -> str | None:
    """The newest Debian ``/usr/lib/postgresql/<v>/bin``, else ``pg_config --bindir``."""

    def version(path: str) -> float:
        try:
            return float(path.split("/")[-2])
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        d = out.stdout.strip()
        if out.returncode == 0 and os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


@dataclass
class PostgresServer:
    """Connection settings, plus stop/start when we own the server process."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    version: str = ""
    bindir: str | None = None
    root: str | None = None
    owner: str | None = None
    running: bool = True
    #: the database to connect to for creating and dropping per-test databases.
    base_database: str = ""
    #: (certificate, key) served with ``ssl = on``; None: no TLS (the default)
    ssl_files: tuple[str, str] | None = None
    #: the CA file that signed ``ssl_files``' certificate
    ca_file: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def owned(self) -> bool:
        """Whether this harness started the server (so it may stop and restart it)."""
        return self.root is not None

    def store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``PostgresStore`` (connection part)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None
        cmd = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        if self.owner is not None:
            cmd = ["runuser", "-u", self.owner, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        return self._run("pg_ctl", "-D", os.path.join(self.root, "data"), *args, check=check)

    def start(self) -> None:
        """Start the (owned) server on its port; returns when it accepts connections."""
        assert self.root is not None
        with self._lock:
            opts = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c max_connections=200"
            )
            if self.ssl_files is not None:
                cert, key = self.ssl_files
                opts += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
            self._pg_ctl(
                "-l", os.path.join(self.root, "server.log"), "-o", opts, "-w", "-t", "60", "start"
            )
            self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the (owned) server: ``fast`` (clean), ``immediate`` (like a crash)."""
        with self._lock:
            if self.root is None or not self.running:
                return
            self._pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)
            self.running = False

    def _pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        assert self.root is not None
        with open(os.path.join(self.root, "data", "postmaster.pid")) as f:
            master = int(f.readline())
        pids = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                # the fields after the parenthesised command name: state, ppid, ...
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry))
        return pids

    def pause(self) -> None:
        """SIGSTOP the (owned) server's processes: it accepts TCP but never answers."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket (owned servers only)."""
        assert self.root is not None
        out = self._run(
            "psql",
            "-h",
            self.root,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )
        return out.stdout.strip()

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        if self.root is None:
            return
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def _tls_files(root: str, owner: str | None) -> tuple[tuple[str, str], str]:
    """The server's (certificate, key) and the CA file that signed it, under ``root``."""
    from tests.servers.certs import TestCA

    directory = os.path.join(root, "tls")
    issued = TestCA(directory).issue("server")
    if owner is not None:  # PostgreSQL wants its key owned by itself, mode 0600
        pw = pwd.getpwnam(owner)
        for path in (directory, issued.cert, issued.key):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return (issued.cert, issued.key), issued.ca


def _start_owned(tls: bool = False) -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        unavailable(
            "postgres", "no initdb found (apt-get install postgresql; see .ci/install-servers)"
        )
    owner: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("postgres", "running as root and there is no 'postgres' user to run initdb")
        owner = "postgres"
    root = tempfile.mkdtemp(prefix="kongtx-pg-")
    os.chmod(root, 0o755)
    if owner is not None:
        pw = pwd.getpwnam(owner)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    srv = PostgresServer(
        host="127.0.0.1",
        port=free_port(),
        user="kong",
        password=PASSWORD,
        database="kong",
        bindir=bindir,
        root=root,
        owner=owner,
        running=False,
    )
    if tls:
        srv.ssl_files, srv.ca_file = _tls_files(root, owner)
    try:
        srv._run(
            "initdb",
            "-D",
            os.path.join(root, "data"),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        srv.start()
        srv.psql(f"CREATE USER kong CREATEDB PASSWORD '{PASSWORD}'")
        srv.psql("CREATE DATABASE kong OWNER kong")
        srv.version = srv.psql("SHOW server_version")
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", "") or ""
        log = os.path.join(root, "server.log")
        if os.path.exists(log):
            with open(log) as f:
                detail += f.read()[-2000:]
        srv.destroy()
        unavailable("postgres", f"could not start a private server: {e} {detail}")
    return srv


def _from_env() -> PostgresServer | None:
    host = os.environ.get("KONG_TEST_PG_HOST")
    if not host:
        return None
    return PostgresServer(
        host=host,
        port=int(os.environ.get("KONG_TEST_PG_PORT", "5432")),
        user=os.environ.get("KONG_TEST_PG_USER", "kong"),
        password=os.environ.get("KONG_TEST_PG_PASSWORD") or None,
        database=os.environ.get("KONG_TEST_PG_DATABASE", "kong"),
    )


_server: PostgresServer | None = None
_failure: str | None = None
_guard = threading.Lock()


def server() -> PostgresServer:
    """The session's PostgreSQL (started on first use); skips or fails when impossible."""
    global _server, _failure
    with _guard:
        if _server is not None:
            return _server
        if _failure is not None:
            unavailable("postgres", _failure)
        try:
            srv = _from_env() or _start_owned()
        except pytest.skip.Exception as e:
            _failure = str(e.msg) if hasattr(e, "msg") else str(e)
            raise
        if srv.owned:
            atexit.register(srv.destroy)
        else:
            import psycopg2

            try:
                conn = psycopg2.connect(**_dsn(srv))
                with conn, conn.cursor() as cur:
                    cur.execute("SHOW server_version")
                    srv.version = cur.fetchone()[0]
                conn.close()
            except psycopg2.Error as e:
                _failure = f"KONG_TEST_PG_HOST={srv.host}: {e}"
                unavailable("postgres", _failure)
        print(
            f"\n[kongtx tests] PostgreSQL {srv.version} on {srv.host}:{srv.port}"
            f" ({'private, ' + (srv.bindir or '') if srv.owned else 'from KONG_TEST_PG_*'})",
            file=sys.stderr,
        )
        _server = srv
        return srv


_tls_server: list[PostgresServer] = []


def tls_server() -> PostgresServer:
    """A second private PostgreSQL with ``ssl = on`` (see the module docstring).

    Started on first use, once per process, and removed at exit; separate from
    :func:`server` so that TLS tests change nothing for the others.
    """
    return once(_tls_server, _guard, lambda: _start_owned(tls=True))


def _dsn(srv: PostgresServer) -> dict[str, Any]:
    return {
        "host": srv.host,
        "port": srv.port,
        "user": srv.user,
        "password": srv.password,
        "dbname": srv.database,
    }


def connect_sync(srv: PostgresServer) -> Any:
    """A blocking psycopg2 connection (autocommit) for test setup and inspection."""
    import psycopg2

    conn = psycopg2.connect(**_dsn(srv))
    conn.autocommit = True
    return conn


def fresh_database(srv: PostgresServer, name: str) -> PostgresServer:
    """An empty database ``name`` on the same server (dropped first if it exists)."""
    conn = connect_sync(srv)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return PostgresServer(
        host=srv.host,
        port=srv.port,
        user=srv.user,
        password=srv.password,
        database=name,
        version=srv.version,
        bindir=srv.bindir,
        root=srv.root,
        owner=srv.owner,
        running=srv.running,
        base_database=srv.base_database or srv.database,
        ssl_files=srv.ssl_files,
        ca_file=srv.ca_file,
    )


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The session's PostgreSQL (see :func:`server`)."""
    return server()


def drop_database(srv: PostgresServer) -> None:
    """Drop ``srv.database`` (a per-test database), disconnecting whoever still uses it.

    ``WITH (FORCE)`` terminates the other sessions, but a non-superuser may not
    terminate a superuser's process: an autovacuum worker that just started on the
    database (after a test that froze the server, say) makes it fail with
    InsufficientPrivilege.  Such a worker is short-lived, so retry a few times.
    """
    import psycopg2.errors

    conn = connect_sync(replace(srv, database=srv.base_database or "postgres"))
    try:
        for attempt in range(20):
            try:
                with conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{srv.database}" WITH (FORCE)')
                return
            except psycopg2.errors.InsufficientPrivilege:
                if attempt == 19:
                    raise
                time.sleep(0.5)
    finally:
        conn.close()
