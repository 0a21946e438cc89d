"""galileo (SPEC §4.6)."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.body_logging import REQUEST_BODY_KEY, RESPONSE_BODY_KEY
from kongtx.plugins.galileo import handler as galileo
from kongtx.plugins.galileo.handler import Handler
from kongtx.plugins.log_transports import LogDropped
from tests.unit.log_plugin_support import make_services, proxied_context


class ScriptedSender:
    """An HttpSender stand-in answering each send from a script."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []

    def request_bytes(self, method: str, body: bytes, headers: Any = None) -> bytes:
        return body

    def send(self, data: bytes) -> Deferred[int]:
        self.requests.append(data)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return fail(Failure(answer))
        return succeed(answer)


class GalileoTests(SynchronousTestCase):
    def handler(self, answers: list[Any], **config: Any) -> tuple[Handler, Any]:
        services, reactor = make_services()
        h = Handler(
            {
                "service_token": "TOKEN",
                "environment": "prod",
                "host": "127.0.0.1",
                "port": 9000,
                "https": False,
                **config,
            },
            services,
        )
        self.assertEqual(h.url, "http://127.0.0.1:9000/1.1.0/single")
        h.sender = ScriptedSender(answers)  # type: ignore[assignment]
        return h, reactor

    def test_flush_after_timeout_sends_one_alf(self) -> None:
        """Entries are sent together flush_timeout seconds after the first, as one ALF 1.1.0."""
        h, reactor = self.handler([200], flush_timeout=2)
        ctx = proxied_context()
        h.log(ctx)
        h.log(ctx)
        self.assertEqual(h.sender.requests, [])  # type: ignore[attr-defined]
        reactor.advance(2)
        (body,) = h.sender.requests  # type: ignore[attr-defined]
        alf = json.loads(body)
        self.assertEqual(alf["version"], "1.1.0")
        self.assertEqual(alf["serviceToken"], "TOKEN")
        self.assertEqual(alf["environment"], "prod")
        self.assertEqual(
            alf["har"]["log"]["creator"], {"name": "galileo-agent-kong", "version": "1.1.0"}
        )
        entries = alf["har"]["log"]["entries"]
        self.assertEqual(len(entries), 2)
        e = entries[0]
        self.assertEqual(e["clientIPAddress"], "10.0.0.9")
        self.assertEqual(e["startedDateTime"], "2016-11-24T15:06:40.250Z")
        self.assertEqual(e["time"], 27)
        self.assertEqual(e["timings"]["wait"], 20)
        self.assertEqual(e["request"]["method"], "POST")
        self.assertEqual(e["request"]["url"], "http://ex.com:8000/users?q=x&flag&q=y")
        self.assertEqual(e["request"]["queryString"][0], {"name": "q", "value": "x"})
        self.assertEqual(e["response"]["status"], 201)
        self.assertIn({"name": "Via", "value": "kong"}, e["response"]["headers"])
        self.assertNotIn("postData", e["request"])
        self.assertEqual((h.buffered, h.batches_sent), (0, 1))

    def test_queue_size_flushes_at_once(self) -> None:
        """Reaching queue_size sends without waiting for the timer."""
        h, _ = self.handler([200], queue_size=2)
        h.log(proxied_context())
        h.log(proxied_context())
        self.assertEqual(len(h.sender.requests), 1)  # type: ignore[attr-defined]

    def test_retries_with_growing_delay_then_drops(self) -> None:
        """A failing collector is retried after 1, 2, 4 s up to retry_count, then the ALF is dropped."""
        h, reactor = self.handler([LogDropped("down"), 500, 503, 500], queue_size=1, retry_count=3)
        h.log(proxied_context())
        self.assertEqual(len(h.sender.requests), 1)  # type: ignore[attr-defined]
        reactor.advance(1)
        self.assertEqual(len(h.sender.requests), 2)  # type: ignore[attr-defined]
        reactor.advance(1.9)
        self.assertEqual(len(h.sender.requests), 2)  # type: ignore[attr-defined]
        reactor.advance(0.1)
        self.assertEqual(len(h.sender.requests), 3)  # type: ignore[attr-defined]
        reactor.advance(4)
        self.assertEqual(len(h.sender.requests), 4)  # type: ignore[attr-defined]
        self.assertEqual((h.dropped, h.buffered), (1, 0))

    def test_buffer_cap_drops_new_entries(self) -> None:
        """Past the buffer cap new entries are dropped and counted."""
        old = galileo.BUFFER_LIMIT
        galileo.BUFFER_LIMIT = 10
        try:
            h, _ = self.handler([])
            h.log(proxied_context())
            self.assertEqual((h.dropped, h.entries), (1, []))
        finally:
            galileo.BUFFER_LIMIT = old

    def test_log_bodies(self) -> None:
        """With log_bodies the request and response bodies go in base64."""
        h, reactor = self.handler([200], log_bodies=True, queue_size=1)
        ctx = proxied_context()
        ctx.body = b"hello"
        d = h.access(ctx)
        self.assertIsNotNone(d)
        self.successResultOf(Deferred.fromCoroutine(d))  # type: ignore[arg-type]
        self.assertEqual(ctx.shared[REQUEST_BODY_KEY], b"hello")
        self.assertEqual(h.body_filter(ctx, b"world", False), b"world")
        self.assertEqual(ctx.shared[RESPONSE_BODY_KEY], b"world")
        h.log(ctx)
        e = json.loads(h.sender.requests[0])["har"]["log"]["entries"][0]  # type: ignore[attr-defined]
        self.assertEqual(base64.b64decode(e["request"]["postData"]["text"]), b"hello")
        self.assertEqual(base64.b64decode(e["response"]["content"]["text"]), b"world")
