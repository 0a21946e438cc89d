# -*- test-case-name: tests.unit.test_log_transports -*-
"""syslog: datagrams to the local syslog socket."""

from __future__ import annotations

import socket

from kongtx.plugins.log_transports.common import Counted

__all__ = ["SyslogSender"]


class SyslogSender(Counted):
    """Datagrams to the local syslog socket (``/dev/log``, or ``KONGTX_SYSLOG_SOCKET``)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<SyslogSender {self.path}>"

    def send(self, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            self._sock.sendto(data, self.path)
        except OSError as e:
            self._drop(f"syslog socket {self.path}: {e}")
            return
        self.sent += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
