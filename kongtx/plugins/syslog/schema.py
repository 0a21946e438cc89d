# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""syslog plugin config (SPEC §4.6): severities by status class."""

from __future__ import annotations

from kongtx.store.schemas import Field, Schema

#: syslog severities, most verbose first (Kong's enum order)
SEVERITIES = ("debug", "info", "notice", "warning", "err", "crit", "alert", "emerg")


def severity_field() -> Field:
    """One severity, default ``info``."""
    return Field(type="string", default="info", enum=SEVERITIES)


SEVERITY_FIELDS = (
    "log_level",
    "successful_severity",
    "client_errors_severity",
    "server_errors_severity",
)

SCHEMA = Schema(fields={name: severity_field() for name in SEVERITY_FIELDS})
