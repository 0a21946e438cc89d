# -*- test-case-name: tests.unit.test_plugin_statsd -*-
"""statsd: request metrics as statsd datagrams (SPEC §4.6).

One datagram per metric, named ``kong.<api name with . as _>.<metric>``:

=================  ==========================================  ====
request_count      ``request.count:1``                          c
latency            ``latency:<latencies.request>``              g
request_size       ``request.size:<request.size>``              g
status_count       ``request.status.<status>:1``                c
response_size      ``response.size:<response.size>``            g
unique_users       ``user.uniques:<consumer id>``               s
request_per_user   ``<consumer id, - as _>.request.count:1``    c
upstream_latency   ``upstream_latency:<latencies.proxy>``       g
=================  ==========================================  ====

The two per-user metrics are sent only for authenticated requests.  datadog
reuses :func:`metric_lines` with its tags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.log_transports import senders
from kongtx.plugins.statsd.schema import METRICS

__all__ = ["Handler", "metric_lines"]


def metric_lines(
    message: Mapping[str, Any],
    metrics: Sequence[str],
    tags: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The statsd lines of one request, in ``metrics`` order; DogStatsD tags when given."""
    api_name = str(message["api"].get("name") or message["api"].get("id") or "").replace(".", "_")
    prefix = f"kong.{api_name}."
    entity = message.get("authenticated_entity") or {}
    consumer_id = entity.get("consumer_id")
    lines: list[str] = []

    def add(metric: str, stat: str, value: Any, kind: str) -> None:
        line = f"{prefix}{stat}:{value}|{kind}"
        metric_tags = (tags or {}).get(metric)
        if metric_tags:
            line += "|#" + ",".join(metric_tags)
        lines.append(line)

    for metric in metrics:
        if metric == "request_count":
            add(metric, "request.count", 1, "c")
        elif metric == "latency":
            add(metric, "latency", message["latencies"]["request"], "g")
        elif metric == "request_size":
            add(metric, "request.size", message["request"]["size"], "g")
        elif metric == "status_count":
            add(metric, f"request.status.{message['response']['status']}", 1, "c")
        elif metric == "response_size":
            add(metric, "response.size", message["response"]["size"], "g")
        elif metric == "unique_users" and consumer_id:
            add(metric, "user.uniques", consumer_id, "s")
        elif metric == "request_per_user" and consumer_id:
            add(metric, f"{str(consumer_id).replace('-', '_')}.request.count", 1, "c")
        elif metric == "upstream_latency":
            add(metric, "upstream_latency", message["latencies"]["proxy"], "g")
    return lines


class Handler(BasePlugin):
    """The statsd plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.host = str(config.get("host") or "localhost")
        self.port = int(config.get("port") or 8125)
        metrics = config.get("metrics")
        self.metrics: list[str] = list(METRICS if metrics is None else metrics)
        self.tags: Mapping[str, Sequence[str]] | None = None
        self.sender = senders(services).udp

    def log(self, ctx: RequestContext) -> PhaseResult:
        message = basic_serialize(ctx)
        for line in metric_lines(message, self.metrics, self.tags):
            self.sender.send(self.host, self.port, line.encode("utf-8"))
        return None
