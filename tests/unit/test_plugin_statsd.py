"""statsd (SPEC §4.6)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.statsd.handler import Handler
from kongtx.plugins.statsd.schema import METRICS
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class StatsdTests(SynchronousTestCase):
    def lines(self, config: dict, authenticated: bool = True) -> list[str]:  # type: ignore[type-arg]
        services, _ = make_services()
        h = Handler({"host": "127.0.0.1", "port": 8125, **config}, services)
        h.sender = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context(api={"id": "a", "name": "my.api"})
        if authenticated:
            ctx.credential = {"id": "cred", "consumer_id": "c-1-2"}
        h.log(ctx)
        self.ctx_sizes = ctx
        return [data.decode() for host, port, data in h.sender.sent]  # type: ignore[attr-defined]

    def test_every_metric(self) -> None:
        """Every default metric, one datagram each, with SPEC's names, values and types."""
        from kongtx.plugins.log_serializer import basic_serialize

        got = self.lines({"metrics": list(METRICS)})
        msg = basic_serialize(self.ctx_sizes)
        self.assertEqual(
            got,
            [
                "kong.my_api.request.count:1|c",
                "kong.my_api.latency:27|g",
                f"kong.my_api.request.size:{msg['request']['size']}|g",
                "kong.my_api.request.status.201:1|c",
                f"kong.my_api.response.size:{msg['response']['size']}|g",
                "kong.my_api.user.uniques:c-1-2|s",
                "kong.my_api.c_1_2.request.count:1|c",
                "kong.my_api.upstream_latency:20|g",
            ],
        )

    def test_per_user_metrics_need_a_consumer_and_selection_is_honoured(self) -> None:
        """Anonymous requests skip the two per-user metrics; only listed metrics are sent."""
        got = self.lines({"metrics": ["request_count", "unique_users", "request_per_user"]}, False)
        self.assertEqual(got, ["kong.my_api.request.count:1|c"])

    def test_default_metrics_are_all(self) -> None:
        """Without metrics configured every metric is sent."""
        self.assertEqual(len(self.lines({})), len(METRICS))
