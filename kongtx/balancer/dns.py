# -*- test-case-name: tests.unit.test_balancer_dns -*-
"""Resolving upstream targets: SRV first, then A, through twisted.names (issue 9).

Why our own resolver and not the reactor's: a balancer needs every address of
a name with its TTL (and an SRV record's port and weight), not the one socket
address ``getaddrinfo`` picks, and it must never wait on the reactor thread.

* An IP literal target needs no DNS.
* A name is looked up in the hosts file first (only when no ``dns_resolver`` is
  configured: the operating system's view, which Kong's dnsmasq gave), then as
  SRV; an SRV answer gives each address its own port and weight; without one,
  the A records are used with the target's port.
* Answers are kept for their TTL (at least :data:`MIN_TTL`); a caller reading an
  expired answer gets it (stale) while one background query refreshes it; a
  failed refresh keeps the stale answer and retries after :data:`ERROR_TTL`.
* Every query has a timeout; a name that cannot be resolved at all is an error
  answer (no addresses), retried after :data:`ERROR_TTL`.
* Name servers: ``dns_resolver`` (``ip[:port]`` list) when set, else the
  ``nameserver`` lines of ``/etc/resolv.conf``.

twisted.names (~0.6 MB per process) is imported by the first query, not by
every worker: most APIs proxy to IP literals or upstream names they never
resolve (issue 8: memory per worker).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.filepath import FilePath

from kongtx.clock import Clock
from kongtx.log import logger

log = logger("kongtx.balancer.dns")

#: Shortest time an answer is trusted, whatever its TTL (a TTL of 0 would mean one
#: query per request).
MIN_TTL = 1.0
#: How long a failure is remembered before the name is queried again.
ERROR_TTL = 1.0
#: Lifetime of an answer taken from the hosts file.
HOSTS_TTL = 30.0
#: How many names of SRV targets are resolved to addresses (bounds the work per answer).
MAX_SRV_RECORDS = 64


class Record(NamedTuple):
    """One address a name resolved to: SRV records carry a port and weight, A records 0."""

    ip: str
    port: int
    weight: int


class Answer(NamedTuple):
    """What a name resolves to (``kind`` ``"srv"``, ``"a"`` or ``"error"``), until ``expires``."""

    kind: str
    records: tuple[Record, ...]
    expires: float
    error: str = ""


def is_ip(host: str) -> bool:
    """Is ``host`` an IPv4 or IPv6 literal (no DNS needed)?"""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def expand(answer: Answer | None, port: int, weight: int) -> list[tuple[str, int, float]]:
    """``(ip, port, weight)`` of each address of a target ``host:port`` with ``weight``.

    The target's weight is its share whatever DNS says: spread evenly over A
    records, and in proportion to the SRV weights over SRV records (an SRV weight
    of 0 counts as 1: RFC 2782 gives such records a small chance, not none).
    """
    if answer is None or not answer.records:
        return []
    records = answer.records
    if answer.kind == "srv":
        total = sum(max(1, r.weight) for r in records)
        return [(r.ip, r.port, weight * max(1, r.weight) / total) for r in records]
    return [(r.ip, port, weight / len(records)) for r in records]


def parse_resolv_conf(text: str) -> list[tuple[str, int]]:
    """The ``nameserver`` lines of a resolv.conf, as (ip, 53) pairs."""
    servers: list[tuple[str, int]] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver" and is_ip(parts[1]):
            servers.append((parts[1], 53))
    return servers


class TargetResolver:
    """Names -> :class:`Answer`, cached for their TTL and refreshed in the background.

    Args:
        reactor: UDP/TCP/time provider for twisted.names' client.
        clock: the node clock (TTLs).
        servers: ``(ip, port)`` name servers (``dns_resolver``); empty: the system's
            resolv.conf and hosts file.
        timeout: seconds one query may take.
        resolver: an ``IResolver`` to use instead (tests).
    """

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        servers: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = 2.0,
        resolver: Any = None,
        hosts_file: str | None = None,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._hosts: FilePath[str] | None = None
        if servers:
            nameservers = [(str(h), int(p)) for h, p in servers]
        else:
            self._hosts = FilePath(hosts_file or "/etc/hosts")
            nameservers = _read_resolv_conf(resolv_conf) or [("127.0.0.1", 53)]
        if hosts_file is not None:
            self._hosts = FilePath(hosts_file)
        self._reactor = reactor
        self._nameservers = nameservers
        #: twisted.names' client, made by the first query (:meth:`_names`)
        self._resolver: Any = resolver
        self._answers: dict[str, Answer] = {}
        self._inflight: dict[str, list[Deferred[Answer]]] = {}
        #: bumped whenever a cached answer changes: balancers compare it to refresh
        self.version = 0

    # ------------------------------------------------------------------ reads

    def cached(self, host: str) -> Answer | None:
        """The answer held for ``host`` (maybe stale: then a refresh starts), or ``None``."""
        answer = self._answers.get(host)
        if answer is not None and answer.expires <= self._clock.seconds():
            self._start(host)
            answer = self._answers.get(host)  # a query may answer at once
        return answer

    async def resolve(self, host: str) -> Answer:
        """A fresh answer for ``host`` (the cached one while its TTL lasts)."""
        answer = self._answers.get(host)
        if answer is not None and answer.expires > self._clock.seconds():
            return answer
        waiter: Deferred[Answer] = Deferred(lambda d: self._drop_waiter(host, d))
        self._start(host, waiter)
        return await waiter

    def forget(self, host: str) -> None:
        """Drop what is known about ``host``."""
        self._answers.pop(host, None)

    # ------------------------------------------------------------------ queries

    def _drop_waiter(self, host: str, waiter: Deferred[Answer]) -> None:
        waiters = self._inflight.get(host)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)

    def _start(self, host: str, waiter: Deferred[Answer] | None = None) -> None:
        waiters = self._inflight.get(host)
        if waiters is not None:
            if waiter is not None:
                waiters.append(waiter)
            return
        self._inflight[host] = [waiter] if waiter is not None else []
        Deferred.fromCoroutine(self._refresh(host)).addErrback(
            lambda f: log.failure("resolving {host} failed", f, host=host)
        )

    async def _refresh(self, host: str) -> None:
        try:
            answer = await self._query(host)
        except CancelledError:
            answer = Answer("error", (), 0.0, "cancelled")
        except Exception as e:
            answer = Answer("error", (), 0.0, _describe(e))
        now = self._clock.seconds()
        old = self._answers.get(host)
        if answer.kind == "error":
            log.info("DNS: {host} not resolved: {error}", host=host, error=answer.error)
            if old is not None and old.kind != "error":
                answer = old._replace(expires=now + ERROR_TTL)  # stale beats nothing
            else:
                answer = answer._replace(expires=now + ERROR_TTL)
        if old is None or old.records != answer.records or old.kind != answer.kind:
            self.version += 1
        self._answers[host] = answer
        waiters = self._inflight.pop(host, [])
        for waiter in waiters:
            waiter.callback(answer)

    def _names(self) -> Any:
        """The ``IResolver`` queries go to (twisted.names' client, made on first use)."""
        if self._resolver is None:
            from twisted.names import client

            self._resolver = client.Resolver(
                servers=self._nameservers,
                timeout=(max(1, round(self.timeout)),),
                reactor=self._reactor,
            )
        return self._resolver

    async def _query(self, host: str) -> Answer:
        now = self._clock.seconds()
        if self._hosts is not None:
            found = [ip for ip in _search_hosts(self._hosts, host) if is_ip(ip)]
            found = [ip for ip in found if ":" not in ip] or found
            if found:
                records = tuple(sorted(Record(ip, 0, 0) for ip in found))
                return Answer("a", records, now + HOSTS_TTL)
        srv = await self._srv(host)
        if srv is not None:
            return srv
        records, ttl = await self._a(host)
        if not records:
            return Answer("error", (), 0.0, "no A records")
        return Answer("a", records, now + max(MIN_TTL, ttl))

    async def _srv(self, host: str) -> Answer | None:
        """The SRV answer of ``host``, or ``None`` when it has none (or the query failed)."""
        from twisted.names import dns
        from twisted.names import error as dns_error

        try:
            answers, _, additional = await self._names().lookupService(
                host, timeout=(max(1, round(self.timeout)),)
            )
        except CancelledError:
            raise
        except (dns_error.DomainError, dns_error.DNSNameError, dns_error.DNSServerError):
            return None
        except Exception as e:
            log.debug("DNS: SRV query for {host} failed: {error}", host=host, error=_describe(e))
            return None
        srvs = [rr for rr in answers if rr.type == dns.SRV][:MAX_SRV_RECORDS]
        if not srvs:
            return None
        lowest = min(rr.payload.priority for rr in srvs)
        srvs = [rr for rr in srvs if rr.payload.priority == lowest]
        ttl = min(float(rr.ttl) for rr in srvs)
        glue: dict[str, list[tuple[str, float]]] = {}
        for rr in list(answers) + list(additional):
            if rr.type == dns.A:
                glue.setdefault(str(rr.name).lower(), []).append(
                    (rr.payload.dottedQuad(), float(rr.ttl))
                )
        records: list[Record] = []
        for rr in srvs:
            name = str(rr.payload.target).rstrip(".").lower()
            port, weight = int(rr.payload.port), int(rr.payload.weight)
            if is_ip(name):
                records.append(Record(name, port, weight))
                continue
            known = glue.get(name)
            if known:
                ips = [ip for ip, _ in known]
                ttl = min([ttl] + [t for _, t in known])
            else:
                try:
                    found, a_ttl = await self._a(name)
                except CancelledError:
                    raise
                except Exception as e:
                    log.info(
                        "DNS: SRV target {name} of {host} not resolved: {error}",
                        name=name,
                        host=host,
                        error=_describe(e),
                    )
                    continue
                ips = [r.ip for r in found]
                ttl = min(ttl, a_ttl) if found else ttl
            records.extend(Record(ip, port, weight) for ip in ips)
        if not records:
            return None
        now = self._clock.seconds()
        return Answer("srv", tuple(sorted(set(records))), now + max(MIN_TTL, ttl))

    async def _a(self, host: str) -> tuple[tuple[Record, ...], float]:
        """The A records of ``host`` (CNAMEs followed by the server) and their least TTL."""
        from twisted.names import dns

        if self._hosts is not None:
            found = [ip for ip in _search_hosts(self._hosts, host) if is_ip(ip) and ":" not in ip]
            if found:
                return tuple(sorted(Record(ip, 0, 0) for ip in found)), HOSTS_TTL
        answers, _, _ = await self._names().lookupAddress(
            host, timeout=(max(1, round(self.timeout)),)
        )
        a = [rr for rr in answers if rr.type == dns.A]
        if not a:
            return (), 0.0
        records = tuple(sorted({Record(rr.payload.dottedQuad(), 0, 0) for rr in a}))
        return records, min(float(rr.ttl) for rr in a)


def _read_resolv_conf(path: str) -> list[tuple[str, int]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return []


def _search_hosts(hosts: FilePath[str], host: str) -> list[str]:
    """Every address the hosts file gives ``host``."""
    from twisted.names.hosts import searchFileForAll

    found: list[str] = searchFileForAll(hosts, host.encode("idna"))
    return found


def _describe(e: BaseException) -> str:
    from twisted.names import error as dns_error

    if isinstance(e, dns_error.DNSQueryTimeoutError):
        return "timed out"
    if isinstance(e, dns_error.DNSNameError):
        return "no such name"
    return f"{type(e).__name__}: {e}"
