# -*- test-case-name: tests.unit.test_cli -*-
"""``kong start/stop/quit/reload/restart/health/check``: running the node and signalling it.

The node itself is ``twistd kong`` (``kongtx/tap.py``); these commands start it in the
background, find it again through ``<prefix>/pids/kong.pid`` and drive it with
signals: SIGTERM stop, SIGQUIT graceful quit, SIGHUP reload.  They talk to its Admin
API (:func:`admin_request`) to know when it is up, and for ``kong cluster``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import kongtx
import kongtx.config_loading
from kongtx.cli.output import CliError, CliLog, load_logged, prefix_config, resolve_prefix
from kongtx.config import Config, ConfigError
from kongtx.config_loading import load_config
from kongtx.prefix import error_log, kong_conf, pid_file, prepare_prefix

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


def admin_json(
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
    config = load_logged(log, args.conf, args.prefix)
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


def require_running(config: Config) -> int:
    pid = running_pid(config)
    if pid is None:
        raise CliError(f"Kong is not running at {config.prefix}")
    return pid


def cmd_stop(args: argparse.Namespace, log: CliLog) -> int:
    """SIGTERM the node and wait for it to exit."""
    config = prefix_config(log, args.prefix)
    pid = require_running(config)
    log.verbose(f"sending SIGTERM to process {pid}")
    if not _terminate(pid, signal.SIGTERM, STOP_TIMEOUT):
        _kill(log, pid)
    log("Kong stopped")
    return 0


def cmd_quit(args: argparse.Namespace, log: CliLog) -> int:
    """SIGQUIT: the node stops accepting, drains, exits; forced after the timeout."""
    config = prefix_config(log, args.prefix)
    pid = require_running(config)
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
    default_file = any(os.path.isfile(p) for p in kongtx.config_loading.DEFAULT_PATHS)
    if conf is None and not default_file:
        current = os.path.join(prefix, "kong.conf")
        return (current if os.path.isfile(current) else None), prefix
    return conf, prefix


def cmd_reload(args: argparse.Namespace, log: CliLog) -> int:
    """Validate the new configuration, rewrite ``<prefix>/kong.conf``, SIGHUP the node."""
    conf, prefix = _reload_source(args.conf, args.prefix)
    config = load_logged(log, conf, prefix)
    pid = require_running(config)
    prepare_prefix(config)
    log.verbose(f"sending SIGHUP to process {pid}")
    os.kill(pid, signal.SIGHUP)
    log("Kong reloaded")
    return 0


def cmd_restart(args: argparse.Namespace, log: CliLog) -> int:
    """``stop`` (errors ignored) then ``start``."""
    try:
        config = prefix_config(log, args.prefix)
        pid = running_pid(config)
        if pid is not None and not _terminate(pid, signal.SIGTERM, STOP_TIMEOUT):
            _kill(log, pid)
    except (CliError, ConfigError) as e:
        log.verbose(f"stop before restart: {e}")
    return cmd_start(args, log)


def cmd_health(args: argparse.Namespace, log: CliLog) -> int:
    """One ``name.......running`` line per part of the node, then the verdict."""
    config = prefix_config(log, args.prefix)
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
