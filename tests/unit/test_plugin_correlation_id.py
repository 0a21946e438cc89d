"""The correlation-id plugin at request time (SPEC §4.5)."""

from __future__ import annotations

import os
import re
import uuid

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.correlation_id.handler import SEQUENCE, Handler
from tests.fakes import FakeContext

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


class CorrelationIdTests(SynchronousTestCase):
    def test_default_uuid_counter(self) -> None:
        """Defaults: Kong-Request-ID = <process uuid>#<counter>, counting up by one."""
        h = Handler({})
        first, second = FakeContext(), FakeContext()
        h.access(first)
        h.access(second)
        a, b = first.headers.get("Kong-Request-ID"), second.headers.get("Kong-Request-ID")
        assert a is not None and b is not None
        self.assertRegex(a, f"^{UUID}#[0-9]+$")
        prefix, n = a.split("#")
        self.assertEqual(prefix, SEQUENCE.uuid)
        self.assertEqual(b, f"{prefix}#{int(n) + 1}")

    def test_uuid_generator(self) -> None:
        """generator=uuid sets a fresh v4 uuid under the configured header name."""
        h = Handler({"header_name": "X-Trace", "generator": "uuid", "echo_downstream": False})
        ctx = FakeContext()
        h.access(ctx)
        value = ctx.headers.get("X-Trace")
        assert value is not None
        self.assertEqual(uuid.UUID(value).version, 4)
        self.assertRegex(value, f"^{UUID}$")

    def test_tracker_generator(self) -> None:
        """generator=tracker: server addr-port-pid-connection-requests-start time with ms."""
        h = Handler({"generator": "tracker"})
        ctx = FakeContext()
        h.access(ctx)
        self.assertEqual(
            ctx.headers.get("Kong-Request-ID"), f"10.0.0.1-8000-{os.getpid()}-7-3-1480000000.250"
        )

    def test_existing_header_kept(self) -> None:
        """A request that already carries the header keeps its value."""
        h = Handler({"echo_downstream": True})
        ctx = FakeContext(headers={"kong-request-id": "from-client"})
        h.access(ctx)
        self.assertEqual(ctx.headers.get_all("Kong-Request-ID"), ["from-client"])
        h.header_filter(ctx)
        self.assertEqual(ctx.response_headers.get("Kong-Request-ID"), "from-client")

    def test_echo_downstream(self) -> None:
        """echo_downstream puts the same value on the response."""
        h = Handler({"echo_downstream": True, "generator": "uuid"})
        ctx = FakeContext()
        h.access(ctx)
        h.header_filter(ctx)
        self.assertEqual(
            ctx.response_headers.get("Kong-Request-ID"), ctx.headers.get("Kong-Request-ID")
        )

    def test_no_echo_by_default(self) -> None:
        """Without echo_downstream the response carries no id."""
        h = Handler({})
        ctx = FakeContext()
        h.access(ctx)
        h.header_filter(ctx)
        self.assertIsNone(ctx.response_headers.get("Kong-Request-ID"))

    def test_unknown_generator_refused(self) -> None:
        """A generator outside the schema's enum cannot build a handler."""
        with self.assertRaises(ValueError):
            Handler({"generator": "nope"})

    def test_counter_is_per_process(self) -> None:
        """Two configs share the process counter, so ids never repeat within a process."""
        a, b = Handler({}), Handler({"header_name": "X-Other"})
        ids = set()
        for h, name in ((a, "Kong-Request-ID"), (b, "X-Other"), (a, "Kong-Request-ID")):
            ctx = FakeContext()
            h.access(ctx)
            ids.add(ctx.headers.get(name))
        self.assertEqual(len(ids), 3)
        self.assertTrue(all(re.match(f"^{SEQUENCE.uuid}#", i or "") for i in ids))
