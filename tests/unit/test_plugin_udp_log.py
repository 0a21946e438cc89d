"""udp-log (SPEC §4.6)."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.udp_log.handler import Handler
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class UdpLogTests(SynchronousTestCase):
    def test_one_datagram_with_the_basic_message(self) -> None:
        """The log phase sends one datagram of the basic serializer's JSON to host:port."""
        services, _ = make_services()
        h = Handler({"host": "127.0.0.1", "port": 9999, "timeout": 10000}, services)
        self.assertEqual((h.destination.host, h.destination.port), ("127.0.0.1", 9999))
        h.destination = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context()
        self.assertIsNone(h.log(ctx))
        (data,) = h.destination.sent  # type: ignore[attr-defined]
        self.assertEqual(json.loads(data), basic_serialize(ctx))
