"""datadog (SPEC §4.6)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.datadog.handler import Handler
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class DatadogTests(SynchronousTestCase):
    def test_tags_are_dogstatsd_suffixes(self) -> None:
        """Metrics with configured tags end in |#k:v,k2:v2; others carry none."""
        services, _ = make_services()
        h = Handler(
            {
                "host": "127.0.0.1",
                "port": 8125,
                "metrics": ["request_count", "latency"],
                "tags": {"request_count": ["env:prod", "team:api"], "latency": []},
            },
            services,
        )
        h.sender = RecordingSender()  # type: ignore[assignment]
        h.log(proxied_context(api={"id": "a", "name": "example"}))
        lines = [d.decode() for _, _, d in h.sender.sent]  # type: ignore[attr-defined]
        self.assertEqual(
            lines,
            ["kong.example.request.count:1|c|#env:prod,team:api", "kong.example.latency:27|g"],
        )
