"""A tiny authoritative DNS server (twisted.names) for the load-balancing e2e tests.

Usage: ``python dns_zone_server.py <udp port> '<zone json>'`` where the zone is
``{"A": {"name": ["ip", ...]}, "SRV": {"name": [[priority, weight, port, "target"], ...]},
"ttl": 30}``.  Prints one line ``ready`` once it listens on 127.0.0.1; every
other name is NXDOMAIN.  Runs until killed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer
from twisted.names import common, dns, server
from twisted.names import error as dns_error


class ZoneResolver(common.ResolverBase):
    def __init__(self, zone: dict[str, Any]) -> None:
        super().__init__()
        self.ttl = int(zone.get("ttl", 30))
        self.a = {k.lower(): v for k, v in zone.get("A", {}).items()}
        self.srv = {k.lower(): v for k, v in zone.get("SRV", {}).items()}

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        key = name.decode("ascii").lower().rstrip(".")
        answers: list[dns.RRHeader] = []
        if type in (dns.A, dns.ALL_RECORDS) and key in self.a:
            answers = [
                dns.RRHeader(name, dns.A, dns.IN, self.ttl, dns.Record_A(ip, self.ttl), auth=True)
                for ip in self.a[key]
            ]
        elif type in (dns.SRV, dns.ALL_RECORDS) and key in self.srv:
            answers = [
                dns.RRHeader(
                    name,
                    dns.SRV,
                    dns.IN,
                    self.ttl,
                    dns.Record_SRV(prio, weight, port, target.encode(), self.ttl),
                    auth=True,
                )
                for prio, weight, port, target in self.srv[key]
            ]
        elif key in self.a or key in self.srv:
            return defer.succeed(([], [], []))  # the name exists, not with this type
        if not answers:
            return defer.fail(dns_error.DomainError(key))
        return defer.succeed((answers, [], []))


def main() -> None:
    from twisted.internet import reactor

    port = int(sys.argv[1])
    zone = json.loads(sys.argv[2])
    factory = server.DNSServerFactory(authorities=[ZoneResolver(zone)])
    protocol = dns.DNSDatagramProtocol(controller=factory)
    reactor.listenUDP(port, protocol, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.callWhenRunning(lambda: print("ready", flush=True))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
