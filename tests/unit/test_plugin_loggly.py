"""loggly (SPEC §4.6)."""

from __future__ import annotations

import json
import socket

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.loggly.handler import Handler
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class LogglyTests(SynchronousTestCase):
    def test_rfc5424_line_over_udp(self) -> None:
        """<PRI>1 time host kong - - [key@41058 tag=...] json to the configured host and port."""
        services, _ = make_services()
        h = Handler(
            {
                "host": "127.0.0.1",
                "port": 5514,
                "key": "KEY",
                "tags": ["kong", "prod"],
                "log_level": "info",
                "successful_severity": "notice",
                "client_errors_severity": "info",
                "server_errors_severity": "info",
            },
            services,
        )
        h.sender = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context()
        h.log(ctx)
        ((host, port, data),) = h.sender.sent  # type: ignore[attr-defined]
        self.assertEqual((host, port), ("127.0.0.1", 5514))
        prefix = (
            f"<13>1 2016-11-28T19:27:43Z {socket.gethostname()} kong - - "
            f'[KEY@41058 tag="kong" tag="prod"] '
        ).encode()
        self.assertTrue(data.startswith(prefix), data[:120])
        self.assertEqual(json.loads(data[len(prefix) :]), basic_serialize(ctx))

    def test_defaults_and_filtering(self) -> None:
        """Default host is logs-01.loggly.com:514; debug severity under an info level is not sent."""
        services, _ = make_services()
        h = Handler(
            {"key": "K", "tags": [], "log_level": "info", "successful_severity": "debug"}, services
        )
        self.assertEqual((h.host, h.port, h.structured), ("logs-01.loggly.com", 514, "[K@41058]"))
        h.sender = RecordingSender()  # type: ignore[assignment]
        h.log(proxied_context())
        self.assertEqual(h.sender.sent, [])  # type: ignore[attr-defined]
