# -*- test-case-name: tests.unit.test_cli -*-
"""The prefix directory: where a node keeps its working files (SPEC §5.1, §6.1).

Why a prefix: the ``kong`` CLI and the node are separate processes started at
different times.  They meet through files under ``<prefix>``: the resolved
``kong.conf`` (later commands read it, not the operator's file), the pid file the
CLI signals, the logs, and the node's persistent identity ``serf/serf.id``.
Layout (Kong 0.9's, with ``pids/kong.pid`` for the twistd process)::

    <prefix>/kong.conf  logs/error.log  logs/access.log  pids/kong.pid
             serf/serf.id  ssl/kong-default.crt  ssl/kong-default.key  kong.db (sqlite)
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kongtx.config import Config

#: Sub-directories created under the prefix.
DIRECTORIES = ("logs", "pids", "serf", "ssl")


def kong_conf(config: Config) -> str:
    """``<prefix>/kong.conf``: the resolved configuration later commands read."""
    return os.path.join(config.prefix, "kong.conf")


def pid_file(config: Config) -> str:
    """``<prefix>/pids/kong.pid``: the node process id, written by twistd."""
    return os.path.join(config.prefix, "pids", "kong.pid")


def error_log(config: Config) -> str:
    """``<prefix>/logs/error.log``: the node's log (twistd ``--logfile``)."""
    return os.path.join(config.prefix, "logs", "error.log")


def access_log(config: Config) -> str:
    """``<prefix>/logs/access.log``."""
    return os.path.join(config.prefix, "logs", "access.log")


def serf_id_file(config: Config) -> str:
    """``<prefix>/serf/serf.id``: the random half of the node name, kept across restarts."""
    return os.path.join(config.prefix, "serf", "serf.id")


def default_cert(config: Config) -> str:
    """``<prefix>/ssl/kong-default.crt``: where the self-signed default certificate lives."""
    return os.path.join(config.prefix, "ssl", "kong-default.crt")


def default_cert_key(config: Config) -> str:
    """``<prefix>/ssl/kong-default.key``: the default certificate's private key."""
    return os.path.join(config.prefix, "ssl", "kong-default.key")


def prefix_paths(config: Config) -> dict[str, str]:
    """The prefix file paths under the names Kong 0.9 shows in ``GET /``."""
    return {
        "kong_conf": kong_conf(config),
        "nginx_pid": pid_file(config),
        "nginx_err_logs": error_log(config),
        "nginx_acc_logs": access_log(config),
        "serf_node_id": serf_id_file(config),
        "ssl_cert_default": default_cert(config),
        "ssl_cert_key_default": default_cert_key(config),
    }


def prepare_prefix(config: Config) -> None:
    """Create ``<prefix>`` and its sub-directories, then write ``<prefix>/kong.conf``.

    The file is written to a temporary name and renamed, so a node reading it
    during ``kong reload`` never sees half a file; mode 0600 because it holds the
    database password and the cluster key.
    """
    os.makedirs(config.prefix, exist_ok=True)
    for name in DIRECTORIES:
        os.makedirs(os.path.join(config.prefix, name), exist_ok=True)
    target = kong_conf(config)
    tmp = f"{target}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(config.render())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_NODE_ID = re.compile(r"[0-9a-f]{32}")


def node_id(config: Config) -> str:
    """The 32-hex random part of the node name, created once and kept in ``serf/serf.id``.

    Reusing it across restarts keeps the node's identity (and its ``nodes`` row)
    stable; a missing or corrupt file gets a fresh id.
    """
    path = serf_id_file(config)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            existing = f.read().strip()
    except OSError:
        existing = ""
    if _NODE_ID.fullmatch(existing):
        return existing
    fresh = uuid.uuid4().hex
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        f.write(fresh)
    return fresh


def node_name(config: Config, hostname: str | None = None) -> str:
    """``<hostname>_<cluster_listen ip:port>_<32 hex>``, Kong 0.9's node name (SPEC §6.1)."""
    host = hostname if hostname is not None else socket.gethostname()
    return f"{host}_{config.cluster_listen}_{node_id(config)}"
