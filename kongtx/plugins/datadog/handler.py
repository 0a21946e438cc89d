# -*- test-case-name: tests.unit.test_plugin_datadog -*-
"""datadog: statsd's metrics with DogStatsD tags (SPEC §4.6).

Each metric may carry the tags configured under ``tags.<metric>``
(``key:value`` strings), appended as ``|#tag1,tag2``; the names, values and
types are statsd's (:func:`kongtx.plugins.statsd.handler.metric_lines`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import PluginServices
from kongtx.plugins.statsd.handler import Handler as StatsdHandler

__all__ = ["Handler"]


class Handler(StatsdHandler):
    """The datadog plugin's request-time half."""

    PRIORITY = 1

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        tags = config.get("tags") or {}
        self.tags = {metric: list(values) for metric, values in tags.items() if values}
