"""The ``kong`` command without a running node, and the prefix it shares with the node."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

import kongtx
from kongtx import cli, config_loading
from kongtx.cli import datastore as cli_datastore
from kongtx.cli import node as cli_node
from kongtx.cli import output as cli_output
from kongtx.config import Config
from kongtx.config_loading import load_config
from kongtx.prefix import (
    DIRECTORIES,
    kong_conf,
    node_id,
    node_name,
    pid_file,
    prepare_prefix,
    serf_id_file,
)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class CliTestCase(SynchronousTestCase):
    """Runs ``cli.main`` in-process with captured output, no KONG_* and no /etc/kong.conf."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="kongtx-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.patch(config_loading, "DEFAULT_PATHS", (self.path("none1"), self.path("none2")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        self.patch(os, "environ", env)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def path(self, *parts: str) -> str:
        return os.path.join(self.tmp, *parts)

    def write(self, name: str, text: str) -> str:
        with open(self.path(name), "w", encoding="utf-8") as f:
            f.write(text)
        return self.path(name)

    def run_cli(self, *argv: str) -> int:
        return cli.main(list(argv))

    def prepared(self) -> Config:
        config = load_config(None, {}, prefix=self.path("prefix"))
        prepare_prefix(config)
        return config


class VersionTests(CliTestCase):
    def test_version(self) -> None:
        """``kong version`` prints 0.9.9 alone."""
        self.assertEqual(self.run_cli("version"), 0)
        self.assertEqual(self.stdout.getvalue(), "0.9.9\n")

    def test_version_all(self) -> None:
        """``kong version -a`` names Kong, kongtx, Twisted and Python versions."""
        self.assertEqual(self.run_cli("version", "--all"), 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(lines[0], "Kong: 0.9.9")
        self.assertEqual(
            [line.split(":")[0] for line in lines], ["Kong", "kongtx", "Twisted", "Python"]
        )

    def test_roar(self) -> None:
        """``kong roar`` prints the art."""
        self.assertEqual(self.run_cli("roar"), 0)
        self.assertIn("Monolith destroyer", self.stdout.getvalue())


class KeygenTests(CliTestCase):
    def test_keygen_is_a_16_byte_base64_key(self) -> None:
        """``kong cluster keygen`` prints a fresh base64 16-byte key the config accepts."""
        self.run_cli("cluster", "keygen")
        self.run_cli("cluster", "keygen")
        keys = self.stdout.getvalue().split()
        self.assertEqual(len(keys), 2)
        self.assertNotEqual(keys[0], keys[1])
        for key in keys:
            self.assertEqual(len(base64.b64decode(key, validate=True)), 16)
            self.assertEqual(
                load_config(None, {"KONG_CLUSTER_ENCRYPT_KEY": key}).cluster_encrypt_key, key
            )


class CheckTests(CliTestCase):
    def test_valid_file(self) -> None:
        """A valid file prints ``configuration at <conf> is valid`` and exits 0."""
        conf = self.write("ok.conf", "pg_host = db\n")
        self.assertEqual(self.run_cli("check", conf), 0)
        self.assertEqual(self.stdout.getvalue(), f"configuration at {conf} is valid\n")

    def test_every_error_is_printed(self) -> None:
        """An invalid file prints each problem as an ``[error]`` line on stderr and exits 1."""
        conf = self.write("bad.conf", "pg_port = x\ndnsmasq = off\n")
        self.assertEqual(self.run_cli("check", conf), 1)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(
            lines[0], r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] pg_port is not a number: 'x'$"
        )
        self.assertTrue(
            lines[1].endswith(
                "[error] must specify a custom DNS resolver when dnsmasq is turned off"
            )
        )
        self.assertEqual(self.stdout.getvalue(), "")

    def test_environment_is_included(self) -> None:
        """``check`` validates with KONG_* variables applied."""
        conf = self.write("ok.conf", "")
        os.environ["KONG_DATABASE"] = "mysql"
        self.assertEqual(self.run_cli("check", conf), 1)
        self.assertIn("database has an invalid value: 'mysql'", self.stderr.getvalue())

    def test_missing_file(self) -> None:
        """A missing file is reported as ``no file at: <conf>``."""
        conf = self.path("missing.conf")
        self.assertEqual(self.run_cli("check", conf), 1)
        self.assertIn(f"[error] no file at: {conf}", self.stderr.getvalue())

    def test_default_path(self) -> None:
        """Without an argument ``check`` reads /etc/kong.conf (SPEC §5.3)."""
        args = cli.build_parser().parse_args(["check"])
        self.assertEqual(args.conf, "/etc/kong.conf")


class ArgumentTests(CliTestCase):
    def test_unknown_command(self) -> None:
        """An unknown command is a usage error (exit 2)."""
        self.assertEqual(self.run_cli("frobnicate"), 2)
        self.assertIn("invalid choice", self.stderr.getvalue())

    def test_no_command(self) -> None:
        """No command prints the usage and exits 1."""
        self.assertEqual(self.run_cli(), 1)
        self.assertIn("usage: kong", self.stderr.getvalue())

    def test_unknown_flag(self) -> None:
        """An unknown flag is a usage error."""
        self.assertEqual(self.run_cli("start", "--bogus"), 2)
        self.assertIn("unrecognized arguments: --bogus", self.stderr.getvalue())

    def test_bad_subcommand(self) -> None:
        """``migrations`` and ``cluster`` take only their known sub-commands."""
        self.assertEqual(self.run_cli("migrations", "sideways"), 2)
        self.assertEqual(self.run_cli("cluster", "nonsense"), 2)

    def test_help(self) -> None:
        """``--help`` prints the usage and exits 0."""
        self.assertEqual(self.run_cli("--help"), 0)
        self.assertIn("usage: kong", self.stdout.getvalue())

    def test_verbose_flags_after_command(self) -> None:
        """``--v``/``--vv`` are accepted after the command, as Kong's users type them."""
        args = cli.build_parser().parse_args(["start", "--vv", "-p", "/x"])
        self.assertTrue(args.vv)
        self.assertEqual(args.prefix, "/x")
        self.assertFalse(getattr(args, "v", False))

    def test_quit_timeout(self) -> None:
        """``quit -t`` takes seconds, 10 by default."""
        parser = cli.build_parser()
        self.assertEqual(parser.parse_args(["quit"]).timeout, 10)
        self.assertEqual(parser.parse_args(["quit", "-t", "3"]).timeout, 3)


class ErrorOutputTests(CliTestCase):
    def test_error_and_hint(self) -> None:
        """Failures print ``Error: <msg>`` and Kong's hint, exit 1."""
        prefix = self.path("absent")
        self.assertEqual(self.run_cli("health", "-p", prefix), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"Error: no such prefix: {prefix}\n{cli_output.HINT}\n",
        )

    def test_debug_shows_loader_events_with_secrets_masked(self) -> None:
        """``--vv`` echoes what the loader saw (KONG_* found), never a secret's value."""
        os.environ["KONG_PG_PASSWORD"] = "hunter2"
        config = self.prepared()
        with open(kong_conf(config), "a") as f:
            f.write("unknown_key = 1\n")
        self.assertEqual(self.run_cli("health", "--vv", "-p", config.prefix), 1)
        out = self.stdout.getvalue()
        self.assertIn("[debug] KONG_PG_PASSWORD ENV found with '******'", out)
        self.assertIn("unknown property 'unknown_key' ignored", out)
        self.assertIn("[debug] pg_password = '******'", out)
        self.assertNotIn("hunter2", out + self.stderr.getvalue())

    def test_verbose_error_has_traceback(self) -> None:
        """With ``--v`` the hint is replaced by the traceback."""
        self.assertEqual(self.run_cli("health", "--v", "-p", self.path("absent")), 1)
        err = self.stderr.getvalue()
        self.assertIn("Traceback", err)
        self.assertNotIn("Run with --v", err)

    def test_start_with_invalid_config_creates_nothing(self) -> None:
        """``start`` validates first: a bad value stops it before the prefix exists."""
        prefix = self.path("never")
        os.environ["KONG_PG_PORT"] = "nope"
        self.assertEqual(self.run_cli("start", "-p", prefix), 1)
        self.assertIn("Error: pg_port is not a number: 'nope'", self.stderr.getvalue())
        self.assertFalse(os.path.exists(prefix))

    def test_start_missing_conf(self) -> None:
        """``start -c`` with a missing file fails with ``no file at``."""
        conf = self.path("nope.conf")
        self.assertEqual(self.run_cli("start", "-c", conf), 1)
        self.assertIn(f"Error: no file at: {conf}", self.stderr.getvalue())


class PrefixCommandTests(CliTestCase):
    def test_health_not_running(self) -> None:
        """``health`` on a prefix without a live node lists each part and says so."""
        config = self.prepared()
        self.assertEqual(self.run_cli("health", "-p", config.prefix), 1)
        self.assertEqual(
            self.stdout.getvalue(), "kongtx......not running\nadmin.......not running\n\n"
        )
        self.assertIn(f"Error: Kong is not running at {config.prefix}", self.stderr.getvalue())

    def test_health_stale_pid(self) -> None:
        """A pid file naming a dead process counts as not running."""
        config = self.prepared()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with open(pid_file(config), "w") as f:
            f.write(str(dead.pid))
        self.assertEqual(self.run_cli("health", "-p", config.prefix), 1)
        self.assertIn("not running", self.stderr.getvalue())

    def test_stop_quit_reload_not_running(self) -> None:
        """stop, quit and reload refuse when no node runs in the prefix."""
        config = self.prepared()
        for command in ("stop", "quit", "reload"):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertEqual(self.run_cli(command, "-p", config.prefix), 1)
            self.assertIn(f"Error: Kong is not running at {config.prefix}", self.stderr.getvalue())

    def test_start_when_already_running(self) -> None:
        """``start`` refuses when the prefix's pid file names a live process."""
        config = self.prepared()
        with open(pid_file(config), "w") as f:
            f.write(str(os.getpid()))
        self.assertEqual(self.run_cli("start", "-p", config.prefix), 1)
        self.assertIn(f"Error: Kong is already running in {config.prefix}", self.stderr.getvalue())

    def test_prefix_conf_is_what_later_commands_read(self) -> None:
        """Commands given ``-p`` load ``<prefix>/kong.conf``, not the defaults."""
        config = load_config(None, {"KONG_ADMIN_LISTEN": "127.0.0.1:1"}, prefix=self.path("p2"))
        prepare_prefix(config)
        log = cli_output.CliLog(io.StringIO(), io.StringIO())
        self.assertEqual(cli_output.prefix_config(log, config.prefix), config)

    def test_twistd_command_line(self) -> None:
        """The node runs as ``twistd --pidfile <prefix>/pids/kong.pid ... kong -c <prefix>/kong.conf``."""
        config = Config(prefix="/srv/k")
        argv = cli_node.twistd_argv(config)
        self.assertEqual(argv[:3], [sys.executable, "-c", cli_node.TWISTD])
        self.assertEqual(
            argv[3:],
            [
                "--logfile",
                "/srv/k/logs/error.log",
                "--pidfile",
                "/srv/k/pids/kong.pid",
                "kong",
                "-c",
                "/srv/k/kong.conf",
                "-p",
                "/srv/k",
            ],
        )
        foreground = cli_node.twistd_argv(config, foreground=True)
        self.assertEqual(foreground[3:6], ["-n", "--logfile", "-"])
        self.assertIn("--pidfile", foreground)

    def test_node_environment_finds_the_plugin(self) -> None:
        """The node's PYTHONPATH leads to a ``twisted/plugins/kong_plugin.py`` next to kongtx."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(kongtx.__file__)))
        env = cli_node.node_environment({"PYTHONPATH": "/elsewhere", "KONG_X": "1"})
        self.assertEqual(env["KONG_X"], "1")
        if os.path.isfile(os.path.join(root, "twisted", "plugins", "kong_plugin.py")):
            self.assertEqual(env["PYTHONPATH"], os.pathsep.join([root, "/elsewhere"]))
            again = cli_node.node_environment(env)
            self.assertEqual(again["PYTHONPATH"], env["PYTHONPATH"])
        else:
            self.assertEqual(env["PYTHONPATH"], "/elsewhere")

    def test_failure_shows_only_this_starts_log(self) -> None:
        """A failed start quotes error.log from where this start began, not older runs."""
        config = self.prepared()
        with open(os.path.join(config.prefix, "logs", "error.log"), "w") as f:
            f.write("old run line\n")
        offset = os.path.getsize(os.path.join(config.prefix, "logs", "error.log"))
        with open(os.path.join(config.prefix, "logs", "error.log"), "a") as f:
            f.write("new run line\n")
        message = cli_node._start_failure(config, "the node exited", offset)
        self.assertEqual(
            message.splitlines(),
            [
                "could not start Kong: the node exited",
                f"last lines of {config.prefix}/logs/error.log:",
                "  new run line",
            ],
        )

    def test_process_helpers(self) -> None:
        """read_pid tolerates garbage; is_running tells live from dead."""
        self.assertIsNone(cli_node.read_pid(self.path("missing")))
        self.assertIsNone(cli_node.read_pid(self.write("garbage", "abc")))
        self.assertEqual(cli_node.read_pid(self.write("pid", " 42\n")), 42)
        self.assertTrue(cli_node.is_running(os.getpid()))
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        self.assertFalse(cli_node.is_running(dead.pid))


#: A stand-in for the node: records the signals it gets; ignores SIGQUIT when asked.
DUMMY_NODE = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
def record(signum, frame):
    log.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGTERM:
        sys.exit(0)
signal.signal(signal.SIGHUP, record)
signal.signal(signal.SIGTERM, record)
signal.signal(signal.SIGQUIT, signal.SIG_IGN if sys.argv[2] == "stubborn" else record)
log.write("ready\\n")
while True:
    time.sleep(0.05)
"""


class SignalTests(CliTestCase):
    """stop/quit/reload signal the pid in the prefix (a stand-in process, no node, no socket)."""

    def dummy(self, config: Config, mode: str = "polite") -> tuple[subprocess.Popen[bytes], str]:
        record = self.path(f"signals-{mode}")
        process = subprocess.Popen([sys.executable, "-c", DUMMY_NODE, record, mode])

        def reap() -> None:
            if process.poll() is None:
                process.kill()
            process.wait()

        self.addCleanup(reap)
        deadline = time.monotonic() + 30
        while not (os.path.exists(record) and "ready" in read(record)):
            self.assertLess(time.monotonic(), deadline, "dummy node did not start")
            time.sleep(0.02)
        with open(pid_file(config), "w") as f:
            f.write(str(process.pid))
        return process, record

    def signals(self, record: str) -> list[str]:
        with open(record) as f:
            return [line for line in f.read().split() if line != "ready"]

    def test_stop_sends_sigterm(self) -> None:
        """``stop`` sends SIGTERM, waits for the exit and prints ``Kong stopped``."""
        config = self.prepared()
        process, record = self.dummy(config)
        self.assertEqual(self.run_cli("stop", "-p", config.prefix), 0, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "Kong stopped\n")
        self.assertEqual(process.wait(timeout=10), 0)
        self.assertEqual(self.signals(record), ["SIGTERM"])

    def test_quit_sends_sigquit(self) -> None:
        """``quit`` sends SIGQUIT and, once the node has exited, prints ``Kong stopped (gracefully)``."""
        config = self.prepared()
        self.patch(cli_node, "STOP_TIMEOUT", 5.0)
        process, record = self.dummy(config, "polite")
        # The polite dummy records SIGQUIT but keeps running: quit must then force it.
        self.assertEqual(self.run_cli("quit", "-p", config.prefix, "-t", "1"), 0)
        self.assertEqual(self.stdout.getvalue(), "Kong stopped (gracefully)\n")
        self.assertEqual(self.signals(record), ["SIGQUIT", "SIGTERM"])
        self.assertEqual(process.wait(timeout=10), 0)

    def test_quit_forces_a_stubborn_node(self) -> None:
        """A node that ignores SIGQUIT is stopped with SIGTERM after the timeout."""
        config = self.prepared()
        process, record = self.dummy(config, "stubborn")
        started = time.monotonic()
        self.assertEqual(self.run_cli("quit", "-p", config.prefix, "-t", "1"), 0)
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual(self.signals(record), ["SIGTERM"])
        self.assertEqual(process.wait(timeout=10), 0)

    def test_reload_rewrites_conf_then_sighup(self) -> None:
        """``reload`` validates the new settings, rewrites ``<prefix>/kong.conf``, then SIGHUPs."""
        config = self.prepared()
        process, record = self.dummy(config)
        os.environ["KONG_LOG_LEVEL"] = "debug"
        self.assertEqual(self.run_cli("reload", "-p", config.prefix), 0, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "Kong reloaded\n")
        with open(kong_conf(config)) as f:
            self.assertIn("log_level = debug", f.read())
        deadline = time.monotonic() + 10
        while not self.signals(record):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        self.assertEqual(self.signals(record), ["SIGHUP"])
        self.assertIsNone(process.poll())

    def test_reload_refuses_an_invalid_configuration(self) -> None:
        """An invalid new configuration is reported and the running node is left alone."""
        config = self.prepared()
        _, record = self.dummy(config)
        before = read(kong_conf(config))
        os.environ["KONG_PG_PORT"] = "nope"
        self.assertEqual(self.run_cli("reload", "-p", config.prefix), 1)
        self.assertIn("Error: pg_port is not a number: 'nope'", self.stderr.getvalue())
        self.assertEqual(read(kong_conf(config)), before)
        time.sleep(0.2)
        self.assertEqual(self.signals(record), [])

    def test_reload_keeps_the_started_file(self) -> None:
        """Without -c and without a default file, reload re-reads ``<prefix>/kong.conf``."""
        config = load_config(None, {"KONG_PG_HOST": "db.internal"}, prefix=self.path("p3"))
        prepare_prefix(config)
        conf, prefix = cli_node._reload_source(None, config.prefix)
        self.assertEqual((conf, prefix), (kong_conf(config), config.prefix))
        other = self.write("other.conf", "pg_host = other\n")
        self.assertEqual(cli_node._reload_source(other, config.prefix), (other, config.prefix))
        self.patch(config_loading, "DEFAULT_PATHS", (other,))
        self.assertEqual(cli_node._reload_source(None, config.prefix), (None, config.prefix))

    def test_reload_source_prefix_from_environment(self) -> None:
        """Without -p the prefix is KONG_PREFIX's, even when only the prefix copy validates."""
        config = load_config(
            None, {"KONG_DNSMASQ": "off", "KONG_DNS_RESOLVER": "8.8.8.8"}, prefix=self.path("p4")
        )
        prepare_prefix(config)
        os.environ["KONG_PREFIX"] = config.prefix
        os.environ["KONG_DNSMASQ"] = "off"
        self.assertEqual(cli_node._reload_source(None, None), (kong_conf(config), config.prefix))
        self.assertEqual(
            load_config(kong_conf(config), os.environ).dns_resolver, config.dns_resolver
        )


class ClusterTests(CliTestCase):
    """``cluster members`` / ``force-leave`` talk to the node's Admin API (faked here)."""

    def setUp(self) -> None:
        super().setUp()
        self.config = self.prepared()
        with open(pid_file(self.config), "w") as f:
            f.write(str(os.getpid()))
        self.requests: list[tuple[str, str, object]] = []
        self.answer: tuple[int, bytes] = (200, b"")

        def fake(config: Config, method: str, path: str, form: object = None) -> tuple[int, bytes]:
            self.requests.append((method, path, form))
            return self.answer

        self.patch(cli_node, "admin_request", fake)

    def test_members(self) -> None:
        """One ``<name>\\t<address>\\t<status>`` line per member, from ``GET /cluster``."""
        self.answer = (
            200,
            b'{"data":[{"name":"a_1.1.1.1:7946_x","address":"1.1.1.1:7946","status":"alive"},'
            b'{"name":"b","address":"2.2.2.2:7946","status":"failed"}],"total":2}',
        )
        self.assertEqual(self.run_cli("cluster", "members", "-p", self.config.prefix), 0)
        self.assertEqual(
            self.stdout.getvalue(),
            "a_1.1.1.1:7946_x\t1.1.1.1:7946\talive\nb\t2.2.2.2:7946\tfailed\n",
        )
        self.assertEqual(self.requests, [("GET", "/cluster", None)])

    def test_force_leave(self) -> None:
        """``force-leave <node>`` sends the name in the body of ``DELETE /cluster``."""
        self.assertEqual(self.run_cli("cluster", "force-leave", "n1", "-p", self.config.prefix), 0)
        self.assertEqual(self.stdout.getvalue(), "force-leaving n1\nleft node n1\n")
        self.assertEqual(self.requests, [("DELETE", "/cluster", {"name": "n1"})])

    def test_force_leave_error(self) -> None:
        """The node's refusal is printed as the error."""
        self.answer = (400, b'{"message":"node n1 is not a member"}')
        self.assertEqual(self.run_cli("cluster", "force-leave", "n1", "-p", self.config.prefix), 1)
        self.assertIn("Error: node n1 is not a member", self.stderr.getvalue())

    def test_force_leave_needs_a_node(self) -> None:
        """``force-leave`` without a node name is refused before any request."""
        self.assertEqual(self.run_cli("cluster", "force-leave", "-p", self.config.prefix), 1)
        self.assertEqual(self.requests, [])

    def test_members_needs_a_running_node(self) -> None:
        """Without a live node in the prefix, members is an error."""
        os.unlink(pid_file(self.config))
        self.assertEqual(self.run_cli("cluster", "members", "-p", self.config.prefix), 1)
        self.assertIn("Kong is not running at", self.stderr.getvalue())


class ResolvePrefixTests(CliTestCase):
    def test_precedence(self) -> None:
        """-p beats KONG_PREFIX beats the file's prefix line beats the default."""
        conf = self.write("with-prefix.conf", "prefix = /from/file\npg_port = invalid\n")
        self.assertEqual(cli_output.resolve_prefix(conf, None), "/from/file")
        self.patch(config_loading, "DEFAULT_PATHS", (conf,))
        self.assertEqual(cli_output.resolve_prefix(None, None), "/from/file")
        os.environ["KONG_PREFIX"] = "/from/env"
        self.assertEqual(cli_output.resolve_prefix(conf, None), "/from/env")
        self.assertEqual(cli_output.resolve_prefix(conf, "/from/flag"), "/from/flag")
        del os.environ["KONG_PREFIX"]
        self.patch(config_loading, "DEFAULT_PATHS", (self.path("none"),))
        self.assertEqual(cli_output.resolve_prefix(None, None), "/usr/local/kong")

    def test_stop_ignores_unrelated_invalid_settings(self) -> None:
        """``stop`` finds the prefix even when the environment alone would not validate."""
        config = load_config(
            None, {"KONG_DNSMASQ": "off", "KONG_DNS_RESOLVER": "8.8.8.8"}, prefix=self.path("p5")
        )
        prepare_prefix(config)
        os.environ["KONG_PREFIX"] = config.prefix
        os.environ["KONG_DNSMASQ"] = "off"
        self.assertEqual(self.run_cli("stop"), 1)
        self.assertIn(f"Error: Kong is not running at {config.prefix}", self.stderr.getvalue())


class ForegroundTests(CliTestCase):
    def test_nginx_daemon_off_means_foreground(self) -> None:
        """``nginx_daemon = off`` makes ``start`` exec the node in the foreground, like --foreground."""
        calls: list[list[str]] = []

        def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
            calls.append(argv)
            raise SystemExit(0)

        self.patch(os, "execve", fake_execve)
        os.environ["KONG_NGINX_DAEMON"] = "off"
        prefix = self.path("fg")
        self.assertRaises(SystemExit, self.run_cli, "start", "-p", prefix)
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0][3:6], ["-n", "--logfile", "-"])
        self.assertTrue(os.path.exists(os.path.join(prefix, "kong.conf")))


class ConfirmTests(CliTestCase):
    def confirm(self, answers: str) -> bool:
        self.patch(sys, "stdin", io.StringIO(answers))
        return cli_datastore._confirm(cli_output.CliLog(self.stdout, self.stderr), "Sure?")

    def test_yes_and_no(self) -> None:
        """Y or y confirms, n refuses; the question ends with ``[Y/n]``."""
        self.assertTrue(self.confirm("y\n"))
        self.assertTrue(self.confirm("Y\n"))
        self.assertFalse(self.confirm("n\n"))
        self.assertIn("> Sure? [Y/n] ", self.stdout.getvalue())

    def test_three_tries(self) -> None:
        """After three other answers (or end of input) the answer is no."""
        self.assertFalse(self.confirm("maybe\nwhat\nhuh\ny\n"))
        self.assertEqual(self.stdout.getvalue().count("[Y/n]"), 3)
        self.assertFalse(self.confirm(""))

    def test_reset_canceled(self) -> None:
        """``migrations reset`` answered no prints ``Canceled`` and touches no store."""
        self.patch(sys, "stdin", io.StringIO("n\n"))
        os.environ["KONG_PREFIX"] = self.path("p")
        self.assertEqual(self.run_cli("migrations", "reset"), 0)
        self.assertTrue(self.stdout.getvalue().endswith("Canceled\n"))
        self.assertFalse(os.path.exists(self.path("p")))


class LogFormatTests(SynchronousTestCase):
    def test_levels(self) -> None:
        """Info goes plain to stdout, warnings/errors dated to stderr, verbose only with --v."""
        out, err = io.StringIO(), io.StringIO()
        log = cli_output.CliLog(out, err)
        log("hello")
        log.verbose("hidden")
        log.warn("careful")
        self.assertEqual(out.getvalue(), "hello\n")
        self.assertRegex(err.getvalue(), r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[warn\] careful\n$")

    def test_verbose_dates_everything(self) -> None:
        """With --v every line carries the date and level, debug stays hidden."""
        out = io.StringIO()
        log = cli_output.CliLog(out, io.StringIO(), "verbose")
        log("hello")
        log.verbose("more")
        log.debug("hidden")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].endswith("[info] hello"))
        self.assertTrue(lines[1].endswith("[verbose] more"))


class PrefixTests(CliTestCase):
    def test_prepare_prefix(self) -> None:
        """The prefix gets its directories and a 0600 kong.conf that loads back equal."""
        config = load_config(None, {"KONG_PG_PASSWORD": "s#cret"}, prefix=self.path("p"))
        prepare_prefix(config)
        for name in DIRECTORIES:
            self.assertTrue(os.path.isdir(os.path.join(config.prefix, name)))
        mode = stat.S_IMODE(os.stat(kong_conf(config)).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(load_config(kong_conf(config), {}), config)
        prepare_prefix(config)
        self.assertEqual(os.listdir(config.prefix).count("kong.conf"), 1)

    def test_node_name(self) -> None:
        """``<hostname>_<cluster_listen>_<32 hex>``, the id kept in serf/serf.id across calls."""
        config = self.prepared()
        name = node_name(config, hostname="box")
        self.assertRegex(name, r"^box_0\.0\.0\.0:7946_[0-9a-f]{32}$")
        self.assertEqual(node_name(config, hostname="box"), name)
        with open(serf_id_file(config)) as f:
            self.assertEqual(f.read(), name.rsplit("_", 1)[1])
        self.assertTrue(re.fullmatch(r".+_0\.0\.0\.0:7946_[0-9a-f]{32}", node_name(config)))

    def test_corrupt_node_id_replaced(self) -> None:
        """A garbled serf.id is replaced by a fresh id instead of being used."""
        config = Config(prefix=self.path("fresh"))
        first = node_id(config)
        with open(serf_id_file(config), "w") as f:
            f.write("not-an-id")
        second = node_id(config)
        self.assertRegex(second, r"^[0-9a-f]{32}$")
        self.assertNotEqual(first, second)


class MigrationsTests(SynchronousTestCase):
    """``kong migrations`` on the embedded sqlite store, through the store factory.

    Run as a child process: ``task.react`` owns the global reactor, which can run once.
    """

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="kongtx-migrations-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def kong(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        env["KONG_PREFIX"] = self.tmp
        return subprocess.run(
            [sys.executable, "-m", "kongtx.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=self.tmp,
        )

    def test_list_up_reset(self) -> None:
        """list says none ran, up runs core first, list shows them, reset -y drops them."""
        db = os.path.join(self.tmp, "kong.db")
        result = self.kong("migrations", "list")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"No migrations have been run yet for database '{db}'\n")

        result = self.kong("migrations", "up")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith("core migrated up to: "))
        self.assertRegex(lines[-1], r"^\d+ migrations ran$")

        result = self.kong("migrations", "up")
        self.assertEqual(result.stdout, f"Database '{db}' is already up to date\n")

        result = self.kong("migrations", "list")
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], f"Executed migrations for database '{db}':")
        self.assertTrue(lines[1].startswith("core: "))

        result = self.kong("migrations", "reset", "--yes")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Schema successfully reset\n")
        result = self.kong("migrations", "list")
        self.assertEqual(result.stdout, f"No migrations have been run yet for database '{db}'\n")
