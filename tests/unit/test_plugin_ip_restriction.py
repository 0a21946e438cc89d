"""ip-restriction at request time (SPEC §4.4)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.ip_restriction.handler import Handler
from tests.fakes import FakeContext

DENIED = (403, {"message": "Your IP address is not allowed"}, {})


def check(config: dict[str, list[str]], ip: str) -> FakeContext:
    ctx = FakeContext(client_ip=ip)
    Handler(config).access(ctx)
    return ctx


class IpRestrictionTests(SynchronousTestCase):
    def test_blacklist_ip_and_cidr(self) -> None:
        """Blacklisted addresses and CIDR members are refused; others pass."""
        config = {"blacklist": ["10.0.0.1", "192.168.0.0/16"]}
        self.assertEqual(check(config, "10.0.0.1").response, DENIED)
        self.assertEqual(check(config, "192.168.44.3").response, DENIED)
        self.assertIsNone(check(config, "10.0.0.2").response)

    def test_whitelist(self) -> None:
        """Only whitelisted addresses pass."""
        config = {"whitelist": ["127.0.0.0/8", "2001:db8::/32"]}
        self.assertIsNone(check(config, "127.0.0.5").response)
        self.assertIsNone(check(config, "2001:db8::1").response)
        self.assertEqual(check(config, "8.8.8.8").response, DENIED)
        self.assertEqual(check(config, "2001:db9::1").response, DENIED)

    def test_ipv4_mapped_ipv6_peer(self) -> None:
        """An IPv4-mapped IPv6 peer is judged as its IPv4 address."""
        self.assertEqual(check({"blacklist": ["10.0.0.0/8"]}, "::ffff:10.1.1.1").response, DENIED)

    def test_no_client_ip(self) -> None:
        """A client without an IP address (unix socket) gets SPEC's 403 message."""
        ctx = check({"whitelist": ["0.0.0.0/0"]}, "")
        self.assertEqual(
            ctx.response,
            (
                403,
                {
                    "message": "Cannot identify the client IP address, unix domain sockets"
                    " are not supported."
                },
                {},
            ),
        )

    def test_uses_client_ip_not_forwarded_for(self) -> None:
        """The verdict is on ctx.client_ip (trusted_ips applied), never on a raw X-Forwarded-For."""
        ctx = FakeContext(client_ip="6.6.6.6", headers={"X-Forwarded-For": "127.0.0.1"})
        Handler({"whitelist": ["127.0.0.1"]}).access(ctx)
        self.assertEqual(ctx.response, DENIED)
