"""request-size-limiting at request time (SPEC §4.4)."""

from __future__ import annotations

import io

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.request_size_limiting.handler import MB, Handler
from tests.fakes import FakeContext

TOO_LARGE = {"message": "Request size limit exceeded"}


class RequestSizeTests(SynchronousTestCase):
    def test_content_length_over_the_limit_is_413(self) -> None:
        """A Content-Length over allowed_payload_size MB is refused with 413, the body never read."""
        ctx = FakeContext(headers={"Content-Length": str(MB + 1)})
        self.assertIsNone(Handler({"allowed_payload_size": 1}).access(ctx))
        self.assertEqual(ctx.response, (413, TOO_LARGE, {}))
        self.assertEqual(ctx.body_reads, 0)

    def test_exactly_the_limit_passes(self) -> None:
        """A body of exactly the limit passes."""
        ctx = FakeContext(headers={"Content-Length": str(MB)})
        Handler({"allowed_payload_size": 1}).access(ctx)
        self.assertFalse(ctx.responded)

    def test_expect_100_continue_is_417(self) -> None:
        """With Expect: 100-continue the refusal is 417, same message."""
        ctx = FakeContext(headers={"Content-Length": "11", "Expect": " 100-Continue "})
        Handler({"allowed_payload_size": 0.00001}).access(ctx)
        self.assertEqual(ctx.response, (417, TOO_LARGE, {}))

    def test_default_is_128_mb(self) -> None:
        """The default limit is 128 MB."""
        h = Handler({})
        self.assertEqual(h.allowed_bytes, 128 * MB)

    def test_without_content_length_the_body_is_measured(self) -> None:
        """No (or a non-numeric) Content-Length: the body is read and measured."""
        ctx = FakeContext(headers={"Transfer-Encoding": "chunked"}, body=b"x" * 20)
        d = ensureDeferred(Handler({"allowed_payload_size": 0.00001}).access(ctx))  # type: ignore[arg-type]
        self.successResultOf(d)
        self.assertEqual(ctx.response, (413, TOO_LARGE, {}))
        self.assertEqual(ctx.body_reads, 1)

    def test_no_body_passes_without_reading(self) -> None:
        """A request with neither Content-Length nor Transfer-Encoding has no body to measure."""
        ctx = FakeContext(body=b"")
        self.assertIsNone(Handler({"allowed_payload_size": 0}).access(ctx))
        self.assertFalse(ctx.responded)
        self.assertEqual(ctx.body_reads, 0)

    def test_streaming_body_is_read(self) -> None:
        """A body still streaming in (no spool yet) is read and measured."""
        ctx = FakeContext(headers={"Transfer-Encoding": "chunked"}, body=b"z" * 40)
        ctx.body_stream = (None, 0)  # type: ignore[attr-defined]
        d = ensureDeferred(Handler({"allowed_payload_size": 0.00001}).access(ctx))  # type: ignore[arg-type]
        self.successResultOf(d)
        self.assertEqual(ctx.response, (413, TOO_LARGE, {}))

    def test_spooled_body_length_is_used_without_reading(self) -> None:
        """A proxy context that knows its spooled body's length is not read."""
        ctx = FakeContext(headers={"Transfer-Encoding": "chunked"})
        ctx.body_stream = (io.BytesIO(b"y" * 30), 30)  # type: ignore[attr-defined]
        self.assertIsNone(Handler({"allowed_payload_size": 0.00001}).access(ctx))
        self.assertEqual(ctx.response, (413, TOO_LARGE, {}))
        self.assertEqual(ctx.body_reads, 0)
