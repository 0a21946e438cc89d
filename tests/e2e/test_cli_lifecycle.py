"""The real ``kong`` command driving a real ``twistd kong`` node through its whole life.

start -> health -> start again (refused) -> reload -> quit -> start -> stop, and
``start --foreground`` under a supervisor's SIGTERM, each against a temporary prefix
with every listener on a free 127.0.0.1 port (never the defaults: other things may run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from proxy_support import free_port, kongtx_env
from twisted.trial.unittest import SynchronousTestCase

COMMAND_TIMEOUT = 120


class LifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="kongtx-e2e-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.prefix = os.path.join(self.tmp, "prefix")
        self.admin_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        env.update(
            KONG_PROXY_LISTEN=f"127.0.0.1:{free_port()}",
            KONG_PROXY_LISTEN_SSL=f"127.0.0.1:{free_port()}",
            KONG_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            KONG_CLUSTER_LISTEN=f"127.0.0.1:{free_port(udp_too=True)}",
            KONG_CLUSTER_LISTEN_RPC=f"127.0.0.1:{free_port()}",
        )
        self.env = kongtx_env(env)
        self.addCleanup(self.kill_leftover)

    @property
    def pid_file(self) -> str:
        return os.path.join(self.prefix, "pids", "kong.pid")

    def pid(self) -> int | None:
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill_leftover(self) -> None:
        """Never leave a node behind, whatever failed."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kong(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kongtx.cli", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.tmp,
            timeout=COMMAND_TIMEOUT,
        )

    def admin(self) -> dict[str, object]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.admin_port}/", timeout=10) as response:
            self.assertEqual(response.status, 200)
            body: dict[str, object] = json.loads(response.read())
            return body

    def assertGone(self, pid: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self.fail(f"process {pid} still running")

    def test_start_health_reload_quit_stop(self) -> None:
        """The CLI starts the node, reports it healthy, reloads, quits, restarts and stops it."""
        result = self.kong("start", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "Kong started")
        pid = self.pid()
        assert pid is not None
        body = self.admin()
        self.assertEqual(body["version"], "0.9.9")
        configuration = body["configuration"]
        assert isinstance(configuration, dict)
        self.assertEqual(configuration["prefix"], self.prefix)
        self.assertEqual(configuration["admin_listen"], f"127.0.0.1:{self.admin_port}")
        with open(os.path.join(self.prefix, "kong.conf")) as f:
            self.assertIn(f"admin_listen = 127.0.0.1:{self.admin_port}", f.read())

        result = self.kong("health", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout,
            f"kongtx......running\nadmin.......running\n\nKong is healthy at {self.prefix}\n",
        )

        result = self.kong("start", "-p", self.prefix)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"Error: Kong is already running in {self.prefix}", result.stderr)

        result = self.kong("cluster", "members", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        cluster = self.env["KONG_CLUSTER_LISTEN"].replace(".", r"\.")
        self.assertRegex(result.stdout, rf"^[^\t]+_{cluster}_[0-9a-f]{{32}}\t{cluster}\talive\n$")
        result = self.kong("cluster", "force-leave", "no-such-node", "-p", self.prefix)
        self.assertEqual(result.returncode, 1)
        self.assertIn("Error: ", result.stderr)

        self.env["KONG_LOG_LEVEL"] = "debug"
        result = self.kong("reload", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "Kong reloaded")
        with open(os.path.join(self.prefix, "kong.conf")) as f:
            self.assertIn("log_level = debug", f.read())
        time.sleep(0.5)
        self.assertEqual(self.pid(), pid)
        self.assertEqual(self.admin()["version"], "0.9.9")

        result = self.kong("quit", "-p", self.prefix, "-t", "10")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "Kong stopped (gracefully)")
        self.assertGone(pid)

        result = self.kong("health", "-p", self.prefix)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"Error: Kong is not running at {self.prefix}", result.stderr)

        result = self.kong("start", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        restarted = self.pid()
        assert restarted is not None
        result = self.kong("restart", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "Kong started")
        self.assertGone(restarted)
        second = self.pid()
        assert second is not None
        self.assertNotIn(second, (pid, restarted))
        self.assertEqual(self.admin()["version"], "0.9.9")
        result = self.kong("stop", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "Kong stopped")
        self.assertGone(second)

    def test_start_fails_cleanly_when_the_admin_port_is_taken(self) -> None:
        """A listener that cannot bind makes ``start`` print ``Error:`` and exit 1, leaving no node."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", self.admin_port))
            busy.listen(1)
            result = self.kong("start", "-p", self.prefix)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("Error: could not start Kong", result.stderr)
        pid = self.pid()
        if pid is not None:
            self.assertGone(pid)

    def test_foreground_start_and_sigterm(self) -> None:
        """``start --foreground`` becomes the node itself (pid file = its pid) and SIGTERM stops it."""
        process = subprocess.Popen(
            [sys.executable, "-m", "kongtx.cli", "start", "--foreground", "-p", self.prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.tmp,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                self.admin()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read() if process.stdout else b""
                    self.fail(f"node did not come up: {output.decode(errors='replace')}")
                time.sleep(0.1)
        self.assertEqual(self.pid(), process.pid)
        result = self.kong("health", "-p", self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        # twistd shuts down cleanly, then re-raises the signal so that a supervisor
        # sees "terminated by SIGTERM" (Twisted's _exitSignal): -15 is the clean outcome.
        self.assertEqual(process.returncode, -signal.SIGTERM)
        self.assertIn(b"Received SIGTERM, shutting down.", output)
        self.assertIn(b"Server Shut Down.", output)
        self.assertFalse(os.path.exists(self.pid_file))
