"""syslog (SPEC §4.6)."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.syslog.handler import Handler, severity_for, should_send, socket_path
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context

CONFIG = {
    "log_level": "info",
    "successful_severity": "info",
    "client_errors_severity": "warning",
    "server_errors_severity": "crit",
}


class SyslogTests(SynchronousTestCase):
    def handler(self, **config: str) -> Handler:
        services, _ = make_services()
        h = Handler({**CONFIG, **config}, services)
        h.sender = RecordingSender()  # type: ignore[assignment]
        return h

    def test_line_format(self) -> None:
        """<PRI>timestamp kong: <basic JSON>, PRI = USER(8) + severity."""
        h = self.handler()
        ctx = proxied_context()
        ctx.status = 200
        h.log(ctx)
        (line,) = h.sender.sent  # type: ignore[attr-defined]
        head, _, body = line.partition(b" kong: ")
        self.assertEqual(head, b"<14>Nov 28 19:27:43")
        self.assertEqual(json.loads(body), basic_serialize(ctx))

    def test_severity_by_status_class(self) -> None:
        """< 400, 4xx and >= 500 map to their configured severities."""
        self.assertEqual(severity_for(CONFIG, 302), "info")
        self.assertEqual(severity_for(CONFIG, 404), "warning")
        self.assertEqual(severity_for(CONFIG, 503), "crit")

    def test_only_as_urgent_as_log_level(self) -> None:
        """A severity less urgent than log_level is not sent."""
        self.assertTrue(should_send({"log_level": "warning"}, "crit"))
        self.assertFalse(should_send({"log_level": "warning"}, "info"))
        h = self.handler(log_level="err")
        ctx = proxied_context()
        ctx.status = 404
        h.log(ctx)
        ctx.status = 500
        h.log(ctx)
        self.assertEqual([x[:4] for x in h.sender.sent], [b"<10>"])  # type: ignore[attr-defined]

    def test_socket_path_default_and_override(self) -> None:
        """/dev/log unless KONGTX_SYSLOG_SOCKET names another socket."""
        import os

        old = os.environ.pop("KONGTX_SYSLOG_SOCKET", None)
        try:
            self.assertEqual(socket_path(), "/dev/log")
            os.environ["KONGTX_SYSLOG_SOCKET"] = "/tmp/x.sock"
            self.assertEqual(socket_path(), "/tmp/x.sock")
        finally:
            os.environ.pop("KONGTX_SYSLOG_SOCKET", None)
            if old is not None:
                os.environ["KONGTX_SYSLOG_SOCKET"] = old
