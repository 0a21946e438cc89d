"""ClusterService without sockets: advertise address, addresses, reconnect and reap."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.cluster import service
from kongtx.cluster.service import ClusterService, advertise_address, parse_address
from kongtx.config import Address, Config
from kongtx.store.memory import MemoryStore
from kongtx.store.tables import TABLES


def config(**changes: Any) -> Config:
    return dataclasses.replace(Config(), **changes)


class AddressTests(SynchronousTestCase):
    def test_advertise_prefers_the_explicit_setting(self) -> None:
        """cluster_advertise wins; a specific listen host is used as is."""
        self.assertEqual(
            advertise_address(config(cluster_advertise=Address("10.1.2.3", 9000))),
            ("10.1.2.3", 9000),
        )
        self.assertEqual(
            advertise_address(config(cluster_listen=Address("192.168.1.5", 7946))),
            ("192.168.1.5", 7946),
        )

    def test_wildcard_listen_never_advertises_loopback_when_a_private_ip_exists(self) -> None:
        """0.0.0.0 advertises the first private IPv4, loopback only as a last resort."""
        self.patch(service, "_private_ipv4", lambda: "10.0.0.7")
        self.assertEqual(advertise_address(config()), ("10.0.0.7", 7946))
        self.patch(service, "_private_ipv4", lambda: None)
        self.assertEqual(advertise_address(config()), ("127.0.0.1", 7946))

    def test_parse_address(self) -> None:
        """ip:port, bare ip (port 7946); anything else is a ValueError."""
        self.assertEqual(parse_address("1.2.3.4:5"), ("1.2.3.4", 5))
        self.assertEqual(parse_address("1.2.3.4"), ("1.2.3.4", 7946))
        for bad in ("host:1", "1.2.3.4:0", "1.2.3.4:x", ""):
            with self.assertRaises(ValueError):
                parse_address(bad)


class ReconnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        clock = Clock(self.reactor)
        store = MemoryStore(TABLES, "a", clock)
        cfg = config(cluster_listen=Address("127.0.0.1", 7000), cluster_profile="local")
        self.svc = ClusterService(cfg, store, None, Cache(clock), clock, self.reactor, "a")
        self.joined: list[tuple[str, int]] = []

        async def join(addr: tuple[str, int]) -> None:
            self.joined.append(addr)

        self.svc.memberlist.join = join  # type: ignore[method-assign]
        self.svc.memberlist.alive("b", 1, "127.0.0.1", 7001, b"\xff\x80", b"")
        self.svc.memberlist.dead("b", 1, "a")

    def test_failed_member_is_retried(self) -> None:
        """A failed member gets a push/pull attempt (a healed partition rejoins)."""
        self.successResultOf(Deferred.fromCoroutine(self.svc.reconnect()))
        self.assertEqual(self.joined, [("127.0.0.1", 7001)])
        self.assertEqual(self.svc.members()[0]["status"], "alive")  # ourselves
        self.assertEqual(
            self.svc.members()[1], {"name": "b", "address": "127.0.0.1:7001", "status": "failed"}
        )

    def test_old_failed_member_is_reaped(self) -> None:
        """After 24 h a failed member is forgotten and no longer retried."""
        self.reactor.advance(service.REAP_AFTER + 1)
        self.successResultOf(Deferred.fromCoroutine(self.svc.reconnect()))
        self.assertEqual(self.joined, [])
        self.assertEqual([m["name"] for m in self.svc.members()], ["a"])

    def test_join_errors_use_serfs_wording(self) -> None:
        """A join that fails raises ValueError starting with Serf's 'Error joining the cluster'."""

        async def refuse(addr: tuple[str, int]) -> None:
            raise ConnectionRefusedError("refused")

        self.svc.memberlist.join = refuse  # type: ignore[method-assign]
        failure = self.failureResultOf(
            Deferred.fromCoroutine(self.svc.join("127.0.0.1:9")), ValueError
        )
        self.assertTrue(str(failure.value).startswith("Error joining the cluster"))

    def test_joining_a_remote_peer_while_advertising_loopback_warns(self) -> None:
        """Advertising 127.0.0.1 to a peer elsewhere is logged as the mistake it is."""
        from twisted.logger import globalLogPublisher

        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.successResultOf(Deferred.fromCoroutine(self.svc.join("10.1.2.3:7946")))
        self.successResultOf(Deferred.fromCoroutine(self.svc.join("127.0.0.1:7946")))
        warnings = [e for e in seen if "cluster_advertise" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["peer"], "10.1.2.3:7946")
