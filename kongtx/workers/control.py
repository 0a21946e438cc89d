# -*- test-case-name: tests.unit.test_workers -*-
"""What the master and its workers agree on: the worker's argv, its sockets, the control lines.

A worker is ``python -m kongtx.workers SOCKETS conf_path prefix``
(``SOCKETS``: a count of plain sockets or their roles, ``proxy,proxy_ssl``); it finds the
inherited listening sockets from descriptor :data:`FIRST_SOCKET_FD` on, and
both ends of its stdin/stdout speak one JSON object per line (:func:`encode`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

#: The first inherited listening socket's descriptor in a worker (0-2 are stdio).
FIRST_SOCKET_FD = 3


def encode(message: dict[str, Any]) -> bytes:
    """One control line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def worker_command(
    sockets: int | Sequence[str], conf_path: str | None, prefix: str | None
) -> list[str]:
    """The argv the master spawns a worker with (this interpreter, this module).

    ``sockets``: how many plain proxy sockets, or each socket's role in order
    (``proxy`` or ``proxy_ssl``: the latter is served with TLS).
    """
    spec = str(sockets) if isinstance(sockets, int) else ",".join(sockets)
    return [sys.executable, "-m", "kongtx.workers", spec, conf_path or "", prefix or ""]


def socket_roles(spec: str) -> list[str]:
    """The roles of the inherited sockets from a worker's first argument (see above)."""
    if spec.isdigit():
        return ["proxy"] * int(spec)
    roles = spec.split(",")
    for role in roles:
        if role not in ("proxy", "proxy_ssl"):
            raise ValueError(f"unknown socket role {role!r}")
    return roles


#: the file the ``local`` rate-limiting counters share, in the prefix
COUNTERS_FILE = "local_counters.shm"


#: the counter files this process created: a node that starts workers again (a reload
#: from 1 to more) keeps its table rather than leaving the old one mapped
_CREATED: set[str] = set()


def share_local_counters(prefix: str, create: bool) -> None:
    """Put the ``local`` rate-limiting counters in ``<prefix>/local_counters.shm``, shared
    by the master (``create``, once per process) and its workers, so a limit holds node-wide."""
    from kongtx.plugins.ratelimit_local import share_local_counters as share

    path = os.path.join(prefix, COUNTERS_FILE)
    if create and path in _CREATED:
        return
    share(path, create=create)
    if create:
        _CREATED.add(path)
