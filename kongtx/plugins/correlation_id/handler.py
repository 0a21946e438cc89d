# -*- test-case-name: tests.unit.test_plugin_correlation_id -*-
"""correlation-id: give every request an id upstream can log (SPEC §4.5).

Priority 0, as Kong 0.9 (its handler declares none): it runs after every other
plugin, so the header is set last in access, and a request rejected earlier
never gets one.

Generators:
  * ``uuid``: a fresh v4 uuid;
  * ``uuid#counter``: ``<uuid of this process>#<n>``, n counting requests of the
    process (Kong: per nginx worker); cheap, and unique across a cluster;
  * ``tracker``: ``<server_addr>-<server_port>-<pid>-<connection serial>-
    <requests on connection>-<request start, seconds with ms>``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext

#: ctx.shared key of the value to echo downstream.
ECHO_KEY = "correlation-id.value"

DEFAULT_HEADER = "Kong-Request-ID"
DEFAULT_GENERATOR = "uuid#counter"


class WorkerSequence:
    """``<process uuid>#<counter>`` ids, shared by every config in this process."""

    def __init__(self) -> None:
        self.uuid = str(uuid.uuid4())
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.uuid}#{next(self._counter)}"


SEQUENCE = WorkerSequence()


def generate_uuid(ctx: RequestContext) -> str:
    return str(uuid.uuid4())


def generate_counter(ctx: RequestContext) -> str:
    return SEQUENCE.next()


def generate_tracker(ctx: RequestContext) -> str:
    return (
        f"{ctx.server_addr}-{ctx.server_port}-{os.getpid()}-{ctx.connection_id}"
        f"-{ctx.connection_requests}-{ctx.started_at:0.3f}"
    )


GENERATORS: dict[str, Callable[[RequestContext], str]] = {
    "uuid": generate_uuid,
    "uuid#counter": generate_counter,
    "tracker": generate_tracker,
}


class Handler(BasePlugin):
    """The correlation-id plugin's request-time half."""

    PRIORITY = 0

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.header_name: str = config.get("header_name") or DEFAULT_HEADER
        name = config.get("generator") or DEFAULT_GENERATOR
        generator = GENERATORS.get(name)
        if generator is None:  # the schema's enum makes this unreachable from the Admin API
            raise ValueError(f"correlation-id: invalid generator {name!r}")
        self.generate = generator
        self.echo_downstream = bool(config.get("echo_downstream"))

    def access(self, ctx: RequestContext) -> PhaseResult:
        value = ctx.headers.get(self.header_name)
        if value is None:
            value = self.generate(ctx)
            ctx.headers.set(self.header_name, value)
        if self.echo_downstream:
            ctx.shared[ECHO_KEY] = value
        return None

    def header_filter(self, ctx: RequestContext) -> PhaseResult:
        if self.echo_downstream:
            value = ctx.shared.get(ECHO_KEY)
            if value is not None:
                ctx.response_headers.set(self.header_name, value)
        return None
