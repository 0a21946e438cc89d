# -*- test-case-name: tests.unit.test_log_transports -*-
"""file-log: appends on a descriptor kept open, written off the reactor thread."""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any

from twisted.internet.interfaces import IReactorThreads

from kongtx.plugins.log_transports.common import MAX_QUEUE, Counted

__all__ = ["FileSender"]


class FileSender(Counted):
    """Appends to one file, its descriptor kept open, written off the reactor thread."""

    def __init__(self, reactor: Any, path: str, max_queue: int = MAX_QUEUE) -> None:
        super().__init__()
        self.reactor = reactor
        self.path = path
        self.max_queue = max_queue
        self.queue: deque[bytes] = deque()
        self._writing = False
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<FileSender {self.path}>"

    def send(self, data: bytes) -> None:
        if len(self.queue) >= self.max_queue:
            self._drop("queue full (slow disk)")
            return
        self.queue.append(data)
        if not self._writing:
            self._writing = True
            self._start_write()

    def _start_write(self) -> None:
        batch = b"".join(self.queue)
        count = len(self.queue)
        self.queue.clear()
        if IReactorThreads.providedBy(self.reactor):
            self.reactor.callInThread(self._write_in_thread, batch, count)
        else:
            self._written(self._write(batch), count)

    def _write_in_thread(self, batch: bytes, count: int) -> None:
        error = self._write(batch)
        self.reactor.callFromThread(self._written, error, count)

    def _write(self, batch: bytes) -> str | None:
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                view = memoryview(batch)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as e:
                return str(e)
        return None

    def _written(self, error: str | None, count: int) -> None:
        if error is None:
            self.sent += count
        else:
            self._drop(f"{self.path}: {error}", count)
        if self.queue:
            self._start_write()
        else:
            self._writing = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
