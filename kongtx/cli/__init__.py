# -*- test-case-name: tests.unit.test_cli -*-
"""The ``kong`` command (SPEC §5.3): what operators type, with Kong 0.9's words.

Why a separate process and not ``twistd`` directly: Kong's CLI validates the whole
configuration *before* anything starts, writes the resolved copy into the prefix,
starts the node in the background and only says ``Kong started`` once the Admin
API answers.  Later commands (``stop``, ``quit``, ``reload``, ``health``) find the
node through ``<prefix>/kong.conf`` and ``<prefix>/pids/kong.pid``.  The node itself
is ``twistd kong`` (``kongtx/tap.py``); this package only drives it with signals:
SIGTERM stop, SIGQUIT graceful quit, SIGHUP reload.

The CLI is synchronous on purpose: it has no reactor to block, except for
``migrations`` and ``config``, which run the store under ``task.react``.

This module holds the argument parser and :func:`main`; the commands live by concern:
``output.py`` (errors, the CLI logger, finding the configuration), ``node.py`` (start,
stop, quit, reload, restart, health, check), ``datastore.py`` (migrations, config) and
``info.py`` (cluster, version, roar).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from twisted.logger import globalLogPublisher

import kongtx
import kongtx.log
from kongtx.cli.datastore import cmd_config, cmd_migrations
from kongtx.cli.info import cmd_cluster, cmd_roar, cmd_version
from kongtx.cli.node import (
    DEFAULT_CHECK_PATH,
    cmd_check,
    cmd_health,
    cmd_quit,
    cmd_reload,
    cmd_restart,
    cmd_start,
    cmd_stop,
)
from kongtx.cli.output import HINT, CliLog, ConfigEcho

__all__ = ["build_parser", "main"]


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
    observer = ConfigEcho(log)
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
