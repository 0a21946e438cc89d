"""What every test helper that starts processes shares, imported under this one name.

``proxy_support`` is imported both as ``proxy_support`` (tests/e2e on ``pythonpath``) and
as ``tests.e2e.proxy_support`` (the cluster tests): two module objects.  Whatever must
be one per pytest process lives here instead:

* ``free_port``: a port is handed out at most once per pytest process, so two listeners
  of a node, a node and a database server, or a node and the next module's node never
  get the same port between its release here and its bind in the child process;
* the nodes running now (``node_started`` / ``node_stopped``), whose log tails
  ``tests/conftest.py`` adds to the report of a failing test, with a kept copy of their
  logs (``kept_logs``), since the node's temporary directory goes with its fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from typing import Protocol

#: how much of a node's log a failure report shows
TAIL_CHARS = 6000

_handed_out: set[int] = set()


def free_port(udp_too: bool = False) -> int:
    """A port nothing listens on now (TCP, and UDP when asked), on 127.0.0.1, never
    handed out before in this process."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
        if port in _handed_out:
            continue
        if udp_too:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port on 127.0.0.1 in 1000 tries")


class RunningNode(Protocol):
    """What the failure report reads of a node (``proxy_support.Node``)."""

    prefix: str
    log_path: str

    @property
    def admin(self) -> str: ...

    def exit_code(self) -> int | None: ...


_running: list[RunningNode] = []


def node_started(node: RunningNode) -> None:
    """``node``'s process is running: report its log if a test fails from now on."""
    if node not in _running:
        _running.append(node)


def node_stopped(node: RunningNode) -> None:
    """``node`` was stopped on purpose: its log no longer belongs to failures."""
    if node in _running:
        _running.remove(node)


def running_nodes() -> list[RunningNode]:
    """The nodes started and not stopped, in start order (dead ones included)."""
    return list(_running)


def log_tail(node: RunningNode) -> str:
    """The last ``TAIL_CHARS`` of the node's output."""
    try:
        with open(node.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-TAIL_CHARS:]
    except OSError as e:
        return f"(no log: {e})"


def kept_logs(node: RunningNode, test_id: str, index: int) -> str | None:
    """Copy the node's output and ``<prefix>/logs`` out of its temporary directory.

    Into ``$KONG_TEST_LOG_DIR`` (default ``<tmp>/kongtx-test-logs``) under the test's
    id; returns the directory, or None when nothing could be copied.
    """
    base = os.environ.get("KONG_TEST_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), "kongtx-test-logs"
    )
    target = os.path.join(base, re.sub(r"[^\w.-]+", "_", test_id)[-150:], f"node{index}")
    try:
        os.makedirs(target, exist_ok=True)
        if os.path.exists(node.log_path):
            shutil.copy(node.log_path, target)
        logs = os.path.join(node.prefix, "logs")
        if os.path.isdir(logs):
            shutil.copytree(logs, os.path.join(target, "logs"), dirs_exist_ok=True)
    except OSError:
        return None
    return target


def failure_sections(test_id: str) -> list[tuple[str, str]]:
    """One report section per running node: how it is, where its logs are kept, its tail."""
    sections = []
    for index, node in enumerate(running_nodes()):
        code = node.exit_code()
        state = "running" if code is None else f"EXITED with {code} before it was stopped"
        kept = kept_logs(node, test_id, index)
        where = f"logs kept in {kept}" if kept else "logs not kept"
        title = f"kongtx node {node.admin} ({state}; {where})"
        sections.append((title, log_tail(node)))
    return sections
