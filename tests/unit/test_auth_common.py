"""What the authentication plugins share: the consumer headers set_consumer leaves."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.auth_common import (
    ANONYMOUS_HEADER,
    CLIENT_CANNOT_SEND,
    CONSUMER_CUSTOM_ID,
    CONSUMER_ID,
    CONSUMER_USERNAME,
    set_consumer,
)
from kongtx.proxy.headers import HeaderList
from tests.fakes import FakeContext, FakeHeaders

CLIENT_HEADERS = [
    ("Host", "ex.com"),
    ("x-consumer-id", "forged"),
    ("X-Credential-Username", "forged"),
    ("Accept", "*/*"),
    ("X-Consumer-ID", "forged-again"),
    ("X-Anonymous-Consumer", "forged"),
    ("X-Consumer-Groups", "admins"),
]


def one_by_one(ctx: Any, consumer: Any, credential: Any) -> None:
    """set_consumer as Kong does it: each header set or removed in turn."""
    if ctx.consumer is None and ctx.credential is None:
        for name in CLIENT_CANNOT_SEND:
            ctx.headers.remove(name)
    found = consumer or {}
    for name, column in (
        (CONSUMER_ID, "id"),
        (CONSUMER_CUSTOM_ID, "custom_id"),
        (CONSUMER_USERNAME, "username"),
    ):
        value = found.get(column)
        if value is None or value == "":
            ctx.headers.remove(name)
        else:
            ctx.headers.set(name, str(value))
    if credential is None:
        ctx.headers.set(ANONYMOUS_HEADER, "true")
    else:
        ctx.headers.remove(ANONYMOUS_HEADER)
    ctx.consumer = consumer or None
    ctx.credential = credential


class SetConsumerTests(SynchronousTestCase):
    CASES: list[tuple[Any, Any, Any]] = [
        ({"id": "c1", "custom_id": None, "username": "bob"}, {"id": "k1"}, None),
        ({"id": "c1", "custom_id": "cu", "username": ""}, {"id": "k1"}, None),
        ({"id": "c2", "custom_id": 7, "username": "anon"}, None, None),
        (None, {"id": "ldap"}, None),
        # a second auth plugin: the first one's identity headers are not forged ones
        ({"id": "c3", "username": "eve"}, {"id": "k3"}, ({"id": "c1"}, {"id": "k1"})),
    ]

    def test_same_headers_as_one_by_one(self) -> None:
        """With HeaderList (one removal pass) or plain headers, the upstream headers and the
        request's consumer are those of setting or removing each header in turn."""
        for consumer, credential, earlier in self.CASES:
            for headers_class in (HeaderList, FakeHeaders):
                expected, got = FakeContext(), FakeContext()
                expected.headers = FakeHeaders(CLIENT_HEADERS)
                got.headers = headers_class(CLIENT_HEADERS)  # type: ignore[assignment]
                if earlier is not None:
                    for ctx in (expected, got):
                        ctx.consumer, ctx.credential = earlier
                one_by_one(expected, consumer, credential)
                set_consumer(got, consumer, credential)  # type: ignore[arg-type]
                self.assertEqual(got.headers.items(), expected.headers.items())
                self.assertEqual((got.consumer, got.credential), (consumer or None, credential))
