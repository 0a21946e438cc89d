"""http-log (SPEC §4.6)."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.http_log.handler import Handler
from kongtx.plugins.log_serializer import basic_serialize
from tests.unit.log_plugin_support import make_services, proxied_context


class HttpLogTests(SynchronousTestCase):
    def test_request_is_kongs_with_the_basic_json(self) -> None:
        """The configured method, the endpoint's path, Kong's headers and the basic JSON body."""
        services, reactor = make_services()
        h = Handler(
            {
                "http_endpoint": "http://u:p@logs.local:8080/bin?k=v",
                "method": "PATCH",
                "timeout": 1000,
                "keepalive": 5000,
            },
            services,
        )
        ctx = proxied_context()
        h.log(ctx)
        self.assertEqual(len(reactor.tcpClients), 1)
        host, port = reactor.tcpClients[0][:2]
        self.assertEqual((host, port), ("logs.local", 8080))
        # the request waits for the connection in the sender; rebuild what it will send
        body = json.dumps(basic_serialize(ctx), separators=(",", ":")).encode()
        expected = (
            b"PATCH /bin?k=v HTTP/1.1\r\nHost: logs.local\r\nConnection: Keep-Alive\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Authorization: Basic dTpw\r\n\r\n" % len(body)
        ) + body
        self.assertEqual(h.sender.request_bytes("PATCH", body, h.headers), expected)
        self.assertEqual(h.sender.busy, 1)
