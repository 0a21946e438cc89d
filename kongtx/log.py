# -*- test-case-name: tests.unit.test_log -*-
"""Structured logging for kongtx, filtered at the configured ``log_level``.

Every kongtx class logs through :func:`logger` (a ``twisted.logger.Logger``
whose observer is a level filter in front of the global publisher), so
``log_level`` applies to our own events without touching how twistd writes its
log file.  Messages are PEP 3101 format strings with named fields, never
pre-formatted text (STYLE.md rule 18).
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

#: Kong's log_level names -> twisted levels (notice has no twisted twin: info).
KONG_LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "notice": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "crit": LogLevel.critical,
    "alert": LogLevel.critical,
    "emerg": LogLevel.critical,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_filtered = FilteringLogObserver(globalLogPublisher, [_predicate])


def logger(namespace: str | None = None) -> Logger:
    """A Logger whose events pass the node's level filter; use as a class attribute."""
    return Logger(namespace=namespace, observer=_filtered)


def set_level(name: str) -> None:
    """Apply a Kong ``log_level`` name to every kongtx logger."""
    _predicate.setLogLevelForNamespace("", KONG_LEVELS[name])
