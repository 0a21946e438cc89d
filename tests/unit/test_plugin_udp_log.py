"""udp-log (SPEC §4.6)."""

from __future__ import annotations

import json
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.log_serializer import basic_serialize
from kongtx.plugins.udp_log.handler import Handler
from tests.unit.log_plugin_support import RecordingSender, make_services, proxied_context


class UdpLogTests(SynchronousTestCase):
    def test_one_datagram_with_the_basic_message(self) -> None:
        """The log phase sends one datagram of the basic serializer's JSON to host:port."""
        services, _ = make_services()
        h = Handler({"host": "127.0.0.1", "port": 9999, "timeout": 10000}, services)
        self.assertEqual((h.destination.host, h.destination.port), ("127.0.0.1", 9999))
        h.destination = RecordingSender()  # type: ignore[assignment]
        ctx = proxied_context()
        self.assertIsNone(h.log(ctx))
        (data,) = h.destination.sent  # type: ignore[attr-defined]
        self.assertEqual(json.loads(data), basic_serialize(ctx))

    def test_real_datagrams_and_a_closed_port(self) -> None:
        """Real sockets on 127.0.0.1: every log phase's datagram arrives (the first
        connects the destination's socket, the next are sent on it); to a closed port
        the ICMP error reported on a later send is a counted drop, never raised."""
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        services, _ = make_services()
        h = Handler({"host": "127.0.0.1", "port": receiver.getsockname()[1]}, services)
        sender = h.destination.sender
        self.addCleanup(sender.close)
        ctx = proxied_context()
        for _ in range(3):
            self.assertIsNone(h.log(ctx))
            self.assertEqual(json.loads(receiver.recv(65536)), basic_serialize(ctx))
        self.assertEqual((sender.sent, sender.dropped), (3, 0))

        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        lost = Handler({"host": "127.0.0.1", "port": port}, services)
        for _ in range(20):  # bounded: the ICMP error comes back within a few sends
            self.assertIsNone(lost.log(ctx))
            if sender.dropped:
                break
            time.sleep(0.01)
        self.assertEqual(sender.dropped, 1)
