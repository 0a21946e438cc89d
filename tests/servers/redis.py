"""A private Redis for the rate-limiting ``redis`` policy tests (Debian's redis-server).

:func:`start` runs ``redis-server`` on a free 127.0.0.1 port with its files in a
temporary directory (no persistence, no unix socket) and returns a
:class:`RedisServer` that a test stops (and may restart, on the same port, for
outage tests).  Installing the binary is ``.ci/install-redis``'s job; without it the
tests are skipped loudly, or fail when ``KONG_TEST_REQUIRE`` contains ``redis``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field

from tests.servers import free_port, port_open, unavailable, wait_until

__all__ = ["RedisServer", "start"]


@dataclass
class RedisServer:
    """One redis-server process we own."""

    binary: str
    port: int
    directory: str
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    host = "127.0.0.1"

    def start(self) -> None:
        """Start (or restart on the same port); wait until it answers PING."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.directory,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--unixsocket", "",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        process = self.process
        if not wait_until(self.ping, 15, 0.05, alive=lambda: process.poll() is None):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start")

    def ping(self) -> bool:
        """Whether the server answers PING (or asks for the password)."""
        if not port_open(self.host, self.port):
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def command(self, *args: str) -> bytes:
        """Run one command (inline protocol) and return the raw reply."""
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)

    def stop(self) -> None:
        """Stop the process (the data goes with it: nothing is persisted)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def cleanup(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(password: str | None = None) -> RedisServer:
    """A fresh redis-server, or skip/fail (KONG_TEST_REQUIRE=redis) when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis", "redis-server is not installed (run .ci/install-redis)")
    server = RedisServer(binary, free_port(), tempfile.mkdtemp(prefix="kongtx-redis-"), password)
    try:
        server.start()
    except Exception as e:
        server.cleanup()
        unavailable("redis", str(e))
    return server
