# -*- test-case-name: tests.unit.test_log_transports -*-
"""What every log sender shares: delivery counters, the drop rule, the queue bound."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kongtx.log import logger

__all__ = ["MAX_QUEUE", "Counted", "LogDropped", "log", "quiet"]

log = logger("kongtx.plugins.log_transports")

#: messages a sender holds while its receiver is slow or away; more are dropped
MAX_QUEUE = 10000


class LogDropped(Exception):
    """A message was not delivered (queue full, receiver gone, timeout)."""


class Counted:
    """``sent`` / ``dropped`` counters, shared by every sender."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0

    def _drop(self, why: str, count: int = 1) -> None:
        if self.dropped == 0 or self.dropped % 1000 == 0:
            log.warn("{sender}: log message dropped: {why}", sender=self, why=why)
        self.dropped += count


def quiet(d: Deferred[Any]) -> None:
    """Consume a send's failure: it was already counted and logged by the sender."""
    d.addErrback(lambda f: f.trap(LogDropped) and None)
