# -*- test-case-name: tests.unit.test_workers -*-
"""What the master and its workers agree on: the worker's argv, its sockets, the control lines.

A worker is ``python -m kongtx.workers SOCKETS conf_path prefix``; it finds the
inherited listening sockets from descriptor :data:`FIRST_SOCKET_FD` on, and
both ends of its stdin/stdout speak one JSON object per line (:func:`encode`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: The first inherited listening socket's descriptor in a worker (0-2 are stdio).
FIRST_SOCKET_FD = 3


def encode(message: dict[str, Any]) -> bytes:
    """One control line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def worker_command(sockets: int, conf_path: str | None, prefix: str | None) -> list[str]:
    """The argv the master spawns a worker with (this interpreter, this module)."""
    return [sys.executable, "-m", "kongtx.workers", str(sockets), conf_path or "", prefix or ""]
