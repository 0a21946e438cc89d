# -*- test-case-name: tests.unit.test_cli -*-
"""What every ``kong`` command shares: its errors, its logger, and finding the configuration.

Kong's CLI prints plain lines for the operator and, with ``--v``/``--vv``, dated
``[level]`` lines; every failure is one ``Error:`` line (see :func:`kongtx.cli.main`).
Commands that act on a running node find it through its prefix (:func:`resolve_prefix`)
and validate the prefix's own ``kong.conf`` (:func:`prefix_config`).
"""

from __future__ import annotations

import os
import time
from typing import TextIO

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import implementer

import kongtx.config
import kongtx.config_loading
from kongtx.config import Config
from kongtx.config_loading import load_config, parse_conf

#: Printed after every ``Error:`` line unless already verbose (Kong's wording).
HINT = "\n  Run with --v (verbose) or --vv (debug) for more details"

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


@implementer(ILogObserver)
class ConfigEcho:
    """Copies kongtx.config's debug events to the CLI's debug output."""

    def __init__(self, log: CliLog) -> None:
        self.log = log

    def __call__(self, event: LogEvent) -> None:
        if str(event.get("log_namespace", "")).startswith("kongtx.config"):
            self.log.debug(formatEvent(event))


def load_logged(log: CliLog, conf: str | None, prefix: str | None = None) -> Config:
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
        candidates = [conf] if conf is not None else list(kongtx.config_loading.DEFAULT_PATHS)
        for path in candidates:
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8", errors="surrogateescape") as f:
                        prefix = parse_conf(f.read(), path).get("prefix", "")
                except OSError:
                    prefix = ""
                break
    return os.path.abspath(prefix or kongtx.config.DEFAULTS["prefix"])


def prefix_config(log: CliLog, prefix: str | None) -> Config:
    """The configuration a running node uses: ``<prefix>/kong.conf`` (SPEC §5.1)."""
    prefix = resolve_prefix(None, prefix)
    if not os.path.isdir(prefix):
        raise CliError(f"no such prefix: {prefix}")
    return load_logged(log, os.path.join(prefix, "kong.conf"), prefix)
