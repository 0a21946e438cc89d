"""file-log (SPEC §4.6)."""

from __future__ import annotations

import json
import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.file_log.handler import Handler
from kongtx.plugins.log_serializer import basic_serialize
from tests.unit.log_plugin_support import make_services, proxied_context


class FileLogTests(SynchronousTestCase):
    def test_appends_one_json_line_per_request(self) -> None:
        """Each request appends its basic JSON and a newline to the file."""
        services, _ = make_services()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "kong.log")
            h = Handler({"path": path}, services)
            ctx = proxied_context()
            h.log(ctx)
            h.log(ctx)
            h.sender.close()
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
        self.assertEqual(lines[2], b"")
        self.assertEqual([json.loads(x) for x in lines[:2]], [basic_serialize(ctx)] * 2)
