"""runscope (SPEC §4.6)."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.runscope.handler import Handler
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class RunscopeTests(SynchronousTestCase):
    def test_message_and_endpoint(self) -> None:
        """POST <api_endpoint>/buckets/<key>/messages with Bearer auth and Kong's runscope message."""
        services, _ = make_services()
        h = Handler(
            {
                "api_endpoint": "http://127.0.0.1:7000/",
                "bucket_key": "bkt",
                "access_token": "tok",
                "log_body": True,
                "timeout": 10000,
                "keepalive": 30,
            },
            services,
        )
        self.assertEqual(h.sender.url, "http://127.0.0.1:7000/buckets/bkt/messages")
        self.assertEqual(h.headers, {"Authorization": "Bearer tok"})
        h.sender = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context()
        ctx.headers.set("Content-Type", "application/x-www-form-urlencoded")
        ctx.body = b"a=1&b=two"
        self.successResultOf(Deferred.fromCoroutine(h.access(ctx)))  # type: ignore[arg-type]
        h.body_filter(ctx, b'{"ok":true}', True)
        h.log(ctx)
        (raw,) = h.sender.sent  # type: ignore[attr-defined]
        head, _, body = raw.partition(b"\n")
        self.assertEqual(
            json.loads(head), {"method": "POST", "headers": {"Authorization": "Bearer tok"}}
        )
        msg = json.loads(body)
        self.assertEqual(
            msg["request"],
            {
                "url": "http://ex.com:8000/users?q=x&flag&q=y",
                "method": "POST",
                "headers": {
                    "host": "Ex.com:8000",
                    "x-a": ["1", "2"],
                    "content-length": "5",
                    "content-type": "application/x-www-form-urlencoded",
                },
                "timestamp": 1_480_000_000.25,
                "body": "a=1&b=two",
                "form": {"a": "1", "b": "two"},
            },
        )
        self.assertEqual(msg["response"]["status"], 201)
        self.assertEqual(msg["response"]["body"], '{"ok":true}')
        self.assertEqual(msg["response"]["timestamp"], 1_480_361_263.5)
        self.assertAlmostEqual(msg["response"]["response_time"], 361_263.25)

    def test_no_bodies_by_default(self) -> None:
        """Without log_body neither body is read nor sent."""
        services, _ = make_services()
        h = Handler({"bucket_key": "b"}, services)
        h.sender = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context()
        self.assertIsNone(h.access(ctx))
        h.log(ctx)
        msg = json.loads(h.sender.sent[0].partition(b"\n")[2])  # type: ignore[attr-defined]
        self.assertNotIn("body", msg["request"])
        self.assertNotIn("body", msg["response"])
