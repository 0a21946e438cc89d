# -*- test-case-name: tests.unit.test_cli -*-
"""The ``kong`` command (SPEC §5.3): what operators type, with Kong 0.9's words.

Why a separate process and not ``twistd`` directly: Kong's CLI validates the whole
configuration *before* anything starts, writes the resolved copy into the prefix,
starts the node in the background and only says ``Kong started`` once the Admin
API answers.  Later commands (``stop``, ``quit``, ``reload``, ``health``) find the
node through ``<prefix>/kong.conf`` and ``<prefix>/pids/kong.pid``.  The node itself
is ``twistd kong`` (``kongtx/tap.py``); this module only drives it with signals:
SIGTERM stop, SIGQUIT graceful quit, SIGHUP reload.

The CLI is synchronous on purpose: it has no reactor to block, except for
``migrations``, which runs the store under ``task.react``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

import kongtx
import kongtx.config
import kongtx.log
from kongtx.config import Config, ConfigError, load_config, parse_conf
from kongtx.prefix import error_log, kong_conf, pid_file, prepare_prefix

#: Printed after every ``Error:`` line unless already verbose (Kong's wording).
HINT = "\n  Run with --v (verbose) or --vv (debug) for more details"

#: What ``kong check`` validates without an argument (SPEC §5.3).
DEFAULT_CHECK_PATH = "/etc/kong.conf"

#: How long ``start`` waits for the Admin API to answer (migrations may run first).
START_TIMEOUT = 60.0
#: How long ``stop`` waits after SIGTERM (and ``quit`` after forcing) before SIGKILL.
STOP_TIMEOUT = 30.0
#: Between two looks at a pid or a port.
POLL_INTERVAL = 0.1
#: Lines of ``error.log`` shown when a start fails.
LOG_TAIL = 20

#: The twistd entry point (``python -m twisted`` is ``twist``, which has no daemon mode).
TWISTD = "from twisted.scripts.twistd import run; run()"

_LEVELS = {"debug": 1, "verbose": 2, "info": 3, "warn": 4, "error": 5}


class CliError(Exception):
    """A command failed; the message is printed after ``Error:``."""


class CliLog:
    """Kong's CLI logger: plain lines on stdout; dated ``[level]`` lines when verbose or for
    warnings and errors (those on stderr)."""

    def __init__(self, out: TextIO, err: TextIO, level: str = "info") -> None:
        self.out = out
        self.err = err
        self.level = _LEVELS[level]

    def _log(self, level: str, message: str) -> None:
        rank = _LEVELS[level]
        if rank < self.level:
            return
        if self.level < _LEVELS["info"] or rank >= _LEVELS["warn"]:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S")
            message = f"{stamp} [{level}] {message}"
        stream = self.out if rank < _LEVELS["warn"] else self.err
        stream.write(message + "\n")
        stream.flush()

    def __call__(self, message: str) -> None:
        self._log("info", message)

    def debug(self, message: str) -> None:
        self._log("debug", message)

    def verbose(self, message: str) -> None:
        self._log("verbose", message)

    def warn(self, message: str) -> None:
        self._log("warn", message)

    def error(self, message: str) -> None:
        self._log("error", message)


# --------------------------------------------------------------------------- helpers


def _load(log: CliLog, conf: str | None, prefix: str | None = None) -> Config:
    """Load and validate, logging the resolved values (secrets masked) at debug."""
    config = load_config(conf, os.environ, prefix)
    for key, value in sorted(config.to_dict(mask_secrets=True).items()):
        log.debug(f"{key} = {value!r}")
    log.verbose(f"prefix in use: {config.prefix}")
    return config


def resolve_prefix(conf: str | None, prefix: str | None) -> str:
    """The prefix a command means, by the usual precedence, without validating anything else.

    ``-p``, else ``KONG_PREFIX``, else the ``prefix`` line of the file (``-c`` or the
    first default path), else the default.  Commands that act on a running node
    only need to find its prefix; the configuration they then validate is the
    prefix's own ``kong.conf``.
    """
    if not prefix:
        prefix = os.environ.get("KONG_PREFIX", "").strip()
    if not prefix:
        candidates = [conf] if conf is not None else list(kongtx.config.DEFAULT_PATHS)
        for path in candidates:
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8", errors="surrogateescape") as f:
                        prefix = parse_conf(f.read(), path).get("prefix", "")
                except OSError:
                    prefix = ""
                break
    return os.path.abspath(prefix or kongtx.config.DEFAULTS["prefix"])


def _prefix_config(log: CliLog, prefix: str | None) -> Config:
    """The configuration a running node uses: ``<prefix>/kong.conf`` (SPEC §5.1)."""
    prefix = resolve_prefix(None, prefix)
    if not os.path.isdir(prefix):
        raise CliError(f"no such prefix: {prefix}")
    return _load(log, os.path.join(prefix, "kong.conf"), prefix)


def read_pid(path: str) -> int | None:
    """The pid in ``path``, or None when missing or garbled."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()
        return not state or state[0] != "Z"
    except OSError:
        return True


def running_pid(config: Config) -> int | None:
    """The node's pid when its pid file names a live process."""
    pid = read_pid(pid_file(config))
    return pid if pid is not None and is_running(pid) else None


def admin_url(config: Config, path: str = "/") -> str:
    """``http://<admin_listen>/<path>``, a wildcard bind dialled on loopback."""
    address = config.admin_listen
    host = address.connect_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{address.port}{path}"


def admin_request(
    config: Config,
    method: str,
    path: str,
    form: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request to the node's own Admin API: ``(status, body)``; OSError when unreachable."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(admin_url(config, path), data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def admin_status(config: Config, timeout: float = 2.0) -> int | None:
    """Status of ``GET /`` on the Admin API, or None when nothing answers."""
    try:
        return admin_request(config, "GET", "/", timeout=timeout)[0]
    except (OSError, ValueError):
        return None


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail(path: str, lines: int = LOG_TAIL, since: int = 0) -> list[str]:
    """The last ``lines`` lines of ``path`` written after byte ``since``."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def twistd_argv(config: Config, foreground: bool = False) -> list[str]:
    """The command line that runs the node for ``config`` (its prefix must be prepared)."""
    argv = [sys.executable, "-c", TWISTD]
    if foreground:
        argv += ["-n", "--logfile", "-"]
    else:
        argv += ["--logfile", error_log(config)]
    argv += ["--pidfile", pid_file(config), "kong", "-c", kong_conf(config), "-p", config.prefix]
    return argv


def node_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The node's environment: ours, plus the source tree on PYTHONPATH when needed.

    twistd finds ``twistd kong`` through ``twisted/plugins/kong_plugin.py`` on
    ``sys.path``.  An installed kongtx has it in site-packages; a development
    checkout installed in editable mode has it only next to the ``kongtx`` package,
    which an editable install does not put on ``sys.path``.
    """
    env = dict(environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(kongtx.__file__)))
    if os.path.isfile(os.path.join(root, "twisted", "plugins", "kong_plugin.py")):
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _terminate(pid: int, sig: int, timeout: float) -> bool:
    """Send ``sig`` and wait for the process to exit; True when it did."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    return _wait(lambda: not is_running(pid), timeout)


def _kill(log: CliLog, pid: int) -> None:
    log.verbose(f"process {pid} still running, sending SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait(lambda: not is_running(pid), 5.0)


def _check_ulimit(log: CliLog) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warn(
            f'ulimit is currently set to "{soft}". For better performance set it to at '
            'least "4096" using "ulimit -n"'
        )


# --------------------------------------------------------------------------- commands


def cmd_start(args: argparse.Namespace, log: CliLog) -> int:
    """Validate, prepare the prefix, start ``twistd kong`` and wait for the Admin API."""
    config = _load(log, args.conf, args.prefix)
    if running_pid(config) is not None:
        raise CliError(f"Kong is already running in {config.prefix}")
    _check_ulimit(log)
    prepare_prefix(config)
    # nginx_daemon = off kept Kong in the foreground (for supervisors); it still does.
    foreground = args.foreground or not config.nginx_daemon
    argv = twistd_argv(config, foreground=foreground)
    log.debug(f"running {' '.join(argv)}")
    if foreground:
        # exec so that the node is this very process: signals (docker stop) reach it.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, node_environment(os.environ))
    # Only what this start writes to error.log is shown if it fails.
    log_offset = _size(error_log(config))
    # twistd's parent waits until the daemon has started its services (or failed to)
    # and reports through its exit status; the daemon's pid file exists by then.
    daemon = subprocess.run(
        argv, capture_output=True, text=True, check=False, env=node_environment(os.environ)
    )
    if daemon.returncode != 0:
        output = (daemon.stderr or daemon.stdout).strip()
        log.verbose(f"twistd said:\n{output}")
        last = output.splitlines()[-1] if output else f"twistd exited with {daemon.returncode}"
        raise CliError(_start_failure(config, last, log_offset))
    pid = read_pid(pid_file(config))
    if pid is None:
        raise CliError(_start_failure(config, f"no pid file at {pid_file(config)}", log_offset))

    def up() -> bool:
        if not is_running(pid):
            raise CliError(_start_failure(config, "the node exited", log_offset))
        return admin_status(config) == 200

    if not _wait(up, START_TIMEOUT):
        if not _terminate(pid, signal.SIGTERM, 5.0):
            _kill(log, pid)
        raise CliError(
            _start_failure(
                config,
                f"the Admin API did not answer on {config.admin_listen} "
                f"within {START_TIMEOUT:g} seconds",
                log_offset,
            )
        )
    log("Kong started")
    return 0


def _start_failure(config: Config, reason: str, log_offset: int = 0) -> str:
    lines = [f"could not start Kong: {reason}" if reason else "could not start Kong"]
    tail = _tail(error_log(config), since=log_offset)
    if tail:
        lines.append(f"last lines of {error_log(config)}:")
        lines.extend(f"  {line}" for line in tail)
    return "\n".join(lines)


def _require_running(config: Config) -> int:
    pid = running_pid(config)
    if pid is None:
        raise CliError(f"Kong is not running at {config.prefix}")
    return pid


def cmd_stop(args: argparse.Namespace, log: CliLog) -> int:
    """SIGTERM the node and wait for it to exit."""
    config = _prefix_config(log, args.prefix)
    pid = _require_running(config)
    log.verbose(f"sending SIGTERM to process {pid}")
    if not _terminate(pid, signal.SIGTERM, STOP_TIMEOUT):
        _kill(log, pid)
    log("Kong stopped")
    return 0


def cmd_quit(args: argparse.Namespace, log: CliLog) -> int:
    """SIGQUIT: the node stops accepting, drains, exits; forced after the timeout."""
    config = _prefix_config(log, args.prefix)
    pid = _require_running(config)
    timeout = max(args.timeout, 1)
    log.verbose(f"sending SIGQUIT to process {pid}, waiting up to {timeout}s")
    if not _terminate(pid, signal.SIGQUIT, timeout):
        log.verbose(f"Kong is still running at {config.prefix}, forcing shutdown")
        if not _terminate(pid, signal.SIGTERM, 5.0):
            _kill(log, pid)
    log("Kong stopped (gracefully)")
    return 0


def _reload_source(conf: str | None, prefix: str | None) -> tuple[str | None, str]:
    """Which file ``reload`` reads, and for which prefix.

    Like Kong: ``-c``, else the default paths.  When neither exists we fall back to
    the prefix's own ``kong.conf`` so that a node started with ``-c`` elsewhere keeps
    its settings (Kong would silently reload the built-in defaults).
    """
    prefix = resolve_prefix(conf, prefix)
    default_file = any(os.path.isfile(p) for p in kongtx.config.DEFAULT_PATHS)
    if conf is None and not default_file:
        current = os.path.join(prefix, "kong.conf")
        return (current if os.path.isfile(current) else None), prefix
    return conf, prefix


def cmd_reload(args: argparse.Namespace, log: CliLog) -> int:
    """Validate the new configuration, rewrite ``<prefix>/kong.conf``, SIGHUP the node."""
    conf, prefix = _reload_source(args.conf, args.prefix)
    config = _load(log, conf, prefix)
    pid = _require_running(config)
    prepare_prefix(config)
    log.verbose(f"sending SIGHUP to process {pid}")
    os.kill(pid, signal.SIGHUP)
    log("Kong reloaded")
    return 0


def cmd_restart(args: argparse.Namespace, log: CliLog) -> int:
    """``stop`` (errors ignored) then ``start``."""
    try:
        config = _prefix_config(log, args.prefix)
        pid = running_pid(config)
        if pid is not None and not _terminate(pid, signal.SIGTERM, STOP_TIMEOUT):
            _kill(log, pid)
    except (CliError, ConfigError) as e:
        log.verbose(f"stop before restart: {e}")
    return cmd_start(args, log)


def cmd_health(args: argparse.Namespace, log: CliLog) -> int:
    """One ``name.......running`` line per part of the node, then the verdict."""
    config = _prefix_config(log, args.prefix)
    pid = running_pid(config)
    checks = {
        "kongtx": pid is not None,
        "admin": pid is not None and admin_status(config) is not None,
    }
    for name, running in checks.items():
        log(name.ljust(12, ".") + ("running" if running else "not running"))
    log("")
    count = sum(checks.values())
    if count == 0:
        raise CliError(f"Kong is not running at {config.prefix}")
    if count < len(checks):
        raise CliError(f"some services are not running at {config.prefix}")
    log(f"Kong is healthy at {config.prefix}")
    return 0


def cmd_check(args: argparse.Namespace, log: CliLog) -> int:
    """Validate a configuration file (environment included); print every problem."""
    try:
        load_config(args.conf, os.environ)
    except ConfigError as e:
        for line in e.errors:
            log.error(line)
        return 1
    log(f"configuration at {args.conf} is valid")
    return 0


def cmd_migrations(args: argparse.Namespace, log: CliLog) -> int:
    """``list`` / ``up`` / ``reset`` against the configured store, under ``task.react``."""
    config = _load(log, args.conf)
    if config.database == "off":
        raise CliError("no datastore to migrate: database = off keeps the configuration in memory")
    if args.command == "reset" and not args.yes:
        if not _confirm(log, "Are you sure? This operation is irreversible."):
            log("Canceled")
            return 0
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    outcome: list[BaseException] = []

    def main(reactor: Any) -> Deferred[None]:
        async def run() -> None:
            try:
                await _run_migrations(reactor, config, args.command, log)
            except Exception as e:
                outcome.append(e)

        return Deferred.fromCoroutine(run())

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise CliError(f"migrations {args.command} failed") from e
    if outcome:
        raise outcome[0]
    return 0


def _db_infos(config: Config) -> tuple[str, str]:
    if config.database == "cassandra":
        return "keyspace", config.cassandra_keyspace
    if config.database == "postgres":
        return "database", config.pg_database
    return "database", config.sqlite_path


async def _run_migrations(reactor: Any, config: Config, command: str, log: CliLog) -> None:
    from kongtx.clock import Clock
    from kongtx.plugins.registry import PluginRegistry
    from kongtx.store.factory import migration_identifiers, open_store
    from kongtx.store.migrations import load_migrations

    if config.database == "sqlite":
        os.makedirs(os.path.dirname(config.sqlite_path), exist_ok=True)
    clock = Clock(reactor)
    store = open_store(config, reactor, clock, f"{socket.gethostname()}_kong-cli")
    desc, name = _db_infos(config)
    await store.start()
    try:
        if command == "list":
            executed = await store.executed_migrations()
            if any(executed.values()):
                log(f"Executed migrations for {desc} '{name}':")
                for identifier, names in executed.items():
                    if names:
                        log(f"{identifier}: {', '.join(names)}")
            else:
                log(f"No migrations have been run yet for {desc} '{name}'")
        elif command == "up":
            # The same identifiers the node migrates on start: core, then every plugin.
            registry = PluginRegistry.load(config.custom_plugins)
            identifiers = migration_identifiers(registry)
            ran = await store.migrate(load_migrations(config.database, identifiers))
            for line in ran:
                identifier, _, migration = line.partition(": ")
                log(f"{identifier} migrated up to: {migration}")
            if ran:
                log(f"{len(ran)} migrations ran")
            else:
                log(f"{desc.capitalize()} '{name}' is already up to date")
        elif command == "reset":
            await store.reset()
            log("Schema successfully reset")
    finally:
        await store.stop()
        clock.cancel_all()


def _react(work: Callable[[Any], Any], what: str) -> None:
    """Run ``await work(reactor)`` under ``task.react``; its exception is re-raised here."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    outcome: list[BaseException] = []

    def main(reactor: Any) -> Deferred[None]:
        async def run() -> None:
            try:
                await work(reactor)
            except Exception as e:
                outcome.append(e)

        return Deferred.fromCoroutine(run())

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise CliError(f"{what} failed") from e
    if outcome:
        raise outcome[0]


def cmd_config(args: argparse.Namespace, log: CliLog) -> int:
    """``parse`` / ``db_import`` / ``db_export``: declarative files (docs/dbless.md).

    ``parse`` validates a file as a DB-less node would (with the plugins the
    configuration loads); ``db_import`` validates all of it, then writes it into
    the configured datastore through the DAO (so running nodes hear of every
    change); ``db_export`` writes the datastore's content as a document, YAML
    unless the file name ends in ``.json``, to stdout without a file.
    """
    from kongtx import declarative

    config = _load(log, args.conf)
    if args.command in ("parse", "db_import") and not args.file:
        raise CliError(f"config {args.command} needs a declarative configuration file")
    if args.command != "parse" and config.database == "off":
        raise CliError(
            f"config {args.command} needs a datastore, and database = off keeps the "
            "configuration in memory (set database to sqlite, postgres or cassandra)"
        )
    errors: list[str] = []
    exported: list[str] = []

    async def work(reactor: Any) -> None:
        from kongtx.clock import Clock
        from kongtx.dao import DAO
        from kongtx.plugins.registry import PluginRegistry
        from kongtx.store.factory import migration_identifiers, open_store
        from kongtx.store.memory import MemoryStore
        from kongtx.store.migrations import load_migrations
        from kongtx.store.tables import TABLES

        clock = Clock(reactor)
        registry = PluginRegistry.load(config.custom_plugins)
        origin = f"{socket.gethostname()}_kong-cli"
        try:
            if args.command == "parse":
                document = declarative.read_file(args.file)
                dao = DAO(MemoryStore(TABLES, origin, clock), registry, clock)
                _, result = await declarative.validate_document(document, dao)
                log(f"parse successful: {result.summary()}")
                return
            if config.database == "sqlite":
                os.makedirs(os.path.dirname(config.sqlite_path), exist_ok=True)
            store = open_store(config, reactor, clock, origin)
            await store.start()
            try:
                identifiers = migration_identifiers(registry)
                await store.migrate(load_migrations(config.database, identifiers))
                dao = DAO(store, registry, clock)
                if args.command == "db_import":
                    document = declarative.read_file(args.file)
                    result = await declarative.import_document(document, dao)
                    log(f"import successful: {result.summary()}")
                    return
                exported.append(
                    declarative.dump(
                        await declarative.export_document(dao), declarative.format_for(args.file)
                    )
                )
            finally:
                await store.stop()
        except declarative.DeclarativeError as e:
            errors.extend(e.errors)
        finally:
            clock.cancel_all()

    _react(work, f"config {args.command}")
    if errors:
        for line in errors:
            log.error(line)
        raise CliError(f"config {args.command}: {len(errors)} error(s) in {args.file}")
    for text in exported:
        if args.file:
            with open(args.file, "w", encoding="utf-8") as f:
                f.write(text)
            log(f"export successful: {args.file}")
        else:
            log.out.write(text)
            log.out.flush()
    return 0


def _confirm(log: CliLog, question: str, tries: int = 3) -> bool:
    """Kong's ``[Y/n]`` prompt: up to ``tries`` answers; anything else means no."""
    for _ in range(tries):
        log.out.write(f"> {question} [Y/n] ")
        log.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            return False
        answer = answer.strip()
        if answer in ("Y", "y"):
            return True
        if answer in ("N", "n"):
            return False
    return False


def cmd_cluster(args: argparse.Namespace, log: CliLog) -> int:
    """``keygen`` prints a key; ``members`` and ``force-leave`` ask the running node.

    Kong shelled out to the ``serf`` agent's RPC; the membership lives in the node
    here, so we ask its Admin API (``/cluster``) on ``admin_listen``.
    """
    if args.command == "keygen":
        log(base64.b64encode(os.urandom(16)).decode("ascii"))
        return 0
    config = _prefix_config(log, args.prefix)
    _require_running(config)
    if args.command == "members":
        body = _admin_json(config, "GET", "/cluster")
        for member in body.get("data", []):
            log(f"{member.get('name')}\t{member.get('address')}\t{member.get('status')}")
        return 0
    if args.command == "reachability":
        # serf's _serf_ping query, asked through the node's cluster_listen_rpc port
        from kongtx.cluster import cli as cluster_cli

        try:
            lines, ok = cluster_cli.reachability(cluster_cli.caller(config.cluster_listen_rpc))
        except cluster_cli.ClusterCliError as e:
            raise CliError(str(e)) from e
        for line in lines:
            log(line)
        return 0 if ok else 1
    if not args.node:
        raise CliError("you need to specify the node to force-leave")
    log(f"force-leaving {args.node}")
    _admin_json(config, "DELETE", "/cluster", {"name": args.node})
    log(f"left node {args.node}")
    return 0


def _admin_json(
    config: Config, method: str, path: str, form: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Call the Admin API; a non-2xx answer becomes a CliError with the node's message."""
    try:
        status, raw = admin_request(config, method, path, form)
    except OSError as e:
        raise CliError(f"could not reach the Admin API at {admin_url(config)}: {e}") from e
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if not 200 <= status < 300:
        message = body.get("message") or raw.decode("utf-8", "replace").strip() or status
        raise CliError(str(message))
    return body


def cmd_version(args: argparse.Namespace, log: CliLog) -> int:
    """``0.9.9``, or with ``--all`` the versions of everything underneath."""
    if not args.all:
        log(kongtx.__version__)
        return 0
    import twisted

    log(f"Kong: {kongtx.__version__}")
    log(f"kongtx: {kongtx.__version__}")
    log(f"Twisted: {twisted.__version__}")
    log(f"Python: {platform.python_version()} ({platform.python_implementation()})")
    return 0


ROAR = r"""
Kong, Monolith destroyer.

       .--.   .--.
      ( (  \_/  ) )
       '-.(o o).-'
         /  ^  \
        |  \_/  |      kongtx {version}
     .--'\_____/'--.
    /  /|  |||  |\  \
   /__/ |__|||__| \__\
        [__]  [__]
"""


def cmd_roar(args: argparse.Namespace, log: CliLog) -> int:
    """ASCII art, as Kong does."""
    log(ROAR.format(version=kongtx.__version__).rstrip("\n"))
    return 0


# --------------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree: one sub-command per Kong command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--v", action="store_true", default=argparse.SUPPRESS, help="verbose")
    common.add_argument("--vv", action="store_true", default=argparse.SUPPRESS, help="debug")

    parser = argparse.ArgumentParser(
        prog="kong",
        description="kongtx: an API gateway node on Twisted that does what Kong 0.9 does.",
        parents=[common],
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="cmd", metavar="<command>")

    def sub(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, parents=[common], allow_abbrev=False)
        p.set_defaults(func=func)
        return p

    def conf(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--conf", help="configuration file")

    def prefix(p: argparse.ArgumentParser) -> None:
        p.add_argument("-p", "--prefix", help="override prefix directory")

    p = sub("start", cmd_start, "start Kong")
    conf(p)
    prefix(p)
    p.add_argument("--foreground", action="store_true", help="stay in the foreground")

    prefix(sub("stop", cmd_stop, "stop a running Kong node (SIGTERM)"))

    p = sub("quit", cmd_quit, "gracefully quit a running Kong node (SIGQUIT)")
    prefix(p)
    p.add_argument("-t", "--timeout", type=int, default=10, help="seconds before forcing")

    p = sub("reload", cmd_reload, "reload a running Kong node (SIGHUP)")
    conf(p)
    prefix(p)

    p = sub("restart", cmd_restart, "restart a Kong node")
    conf(p)
    prefix(p)
    p.set_defaults(foreground=False)

    prefix(sub("health", cmd_health, "verify that Kong's services are running"))

    p = sub("check", cmd_check, "check the validity of a configuration file")
    p.add_argument("conf", nargs="?", default=DEFAULT_CHECK_PATH, help="configuration file")

    p = sub("migrations", cmd_migrations, "manage the datastore schema")
    p.add_argument("command", choices=("list", "up", "reset"))
    conf(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before reset")

    p = sub("cluster", cmd_cluster, "manage the cluster")
    p.add_argument("command", choices=("keygen", "members", "reachability", "force-leave"))
    p.add_argument("node", nargs="?", help="the node to force-leave")
    conf(p)
    prefix(p)

    p = sub("config", cmd_config, "declarative configuration files (parse, import, export)")
    p.add_argument("command", choices=("parse", "db_import", "db_export"))
    p.add_argument("file", nargs="?", help="the declarative file (YAML or JSON)")
    conf(p)

    p = sub("version", cmd_version, "print Kong's version")
    p.add_argument("-a", "--all", action="store_true", help="print every dependency's version")

    sub("roar", cmd_roar, "print Kong")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``kong`` console script: parse, run one command, return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    verbose = getattr(args, "v", False)
    debug = getattr(args, "vv", False)
    log = CliLog(sys.stdout, sys.stderr, "debug" if debug else "verbose" if verbose else "info")
    if getattr(args, "func", None) is None:
        parser.print_usage(sys.stderr)
        return 1
    log.verbose(f"Kong: {kongtx.__version__}")
    observer = _ConfigEcho(log)
    if debug:
        # --vv shows what the loader saw (files read, KONG_* found, keys ignored), as Kong does.
        kongtx.log.set_level("debug")
        globalLogPublisher.addObserver(observer)
    try:
        code: int = args.func(args, log)
        return code
    except Exception as e:
        sys.stderr.write(f"Error: {e}\n")
        if verbose or debug:
            traceback.print_exc(file=sys.stderr)
        else:
            sys.stderr.write(HINT + "\n")
        sys.stderr.flush()
        return 1
    finally:
        if debug:
            globalLogPublisher.removeObserver(observer)


@implementer(ILogObserver)
class _ConfigEcho:
    """Copies kongtx.config's debug events to the CLI's debug output."""

    def __init__(self, log: CliLog) -> None:
        self.log = log

    def __call__(self, event: LogEvent) -> None:
        if str(event.get("log_namespace", "")).startswith("kongtx.config"):
            self.log.debug(formatEvent(event))


if __name__ == "__main__":
    sys.exit(main())
