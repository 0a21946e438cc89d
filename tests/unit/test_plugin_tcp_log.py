"""tcp-log (SPEC §4.6)."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.tcp_log.handler import Handler
from tests.unit.log_plugin_support import make_services, proxied_context


class TcpLogTests(SynchronousTestCase):
    def test_json_and_crlf_on_a_pooled_connection(self) -> None:
        """Each message is the basic JSON plus CRLF; two handlers share the receiver's connection."""
        services, reactor = make_services()
        config = {"host": "127.0.0.1", "port": 5140, "timeout": 1000, "keepalive": 2000}
        h1 = Handler(config, services)
        h2 = Handler(config, services)
        self.assertIs(h1.sender, h2.sender)
        self.assertEqual((h1.sender.timeout, h1.sender.keepalive), (1.0, 2.0))
        ctx = proxied_context()
        h1.log(ctx)
        h2.log(ctx)
        self.assertEqual(len(reactor.tcpClients), 1)
        line = h1.sender.queue[0]
        self.assertTrue(line.endswith(b"\r\n"))
        self.assertEqual(json.loads(line), basic_serialize(ctx))
