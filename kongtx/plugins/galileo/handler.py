# -*- test-case-name: tests.unit.test_plugin_galileo -*-
"""galileo: buffer ALF entries and POST them to the collector (SPEC §4.6).

Entries of one configuration are buffered and sent as one ALF to
``/1.1.0/single`` on ``http(s)://<host>:<port>`` when ``queue_size`` entries are
waiting or ``flush_timeout`` seconds after the first one.  A failed send is
retried after 1, 2, 4... seconds (at most 60) up to ``retry_count`` times, then
dropped.  The buffer (waiting plus retrying) holds at most 200 MB; past it new
entries are dropped and counted, so a dead collector cannot exhaust memory.

``host``/``port``/``https`` point anywhere (tests use a local receiver);
``connection_timeout`` (seconds) bounds each send; ``https_verify`` turns
certificate verification on.  With ``log_bodies`` the request body and the first
MB of the response body are kept (base64), as ALF wants them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from kongtx.log import logger
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.body_logging import BodyLoggingPlugin
from kongtx.plugins.galileo.alf import alf_document, alf_entry
from kongtx.plugins.log_serializer import encode
from kongtx.plugins.log_transports import HttpSender, LogDropped, senders

__all__ = ["BUFFER_LIMIT", "Handler", "MAX_RETRY_DELAY"]

#: bytes of entries a configuration may hold (SPEC: 200 MB buffer cap)
BUFFER_LIMIT = 200 * 1024 * 1024
MAX_RETRY_DELAY = 60.0

log = logger("kongtx.plugins.galileo")


class Handler(BodyLoggingPlugin):
    """The galileo plugin's request-time half, and its buffer."""

    PRIORITY = 0

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.token = str(config["service_token"])
        self.environment = config.get("environment")
        self.capture_bodies = bool(config.get("log_bodies"))
        self.retry_count = int(config.get("retry_count", 10))
        self.queue_size = max(1, int(config.get("queue_size", 1000)))
        self.flush_timeout = float(config.get("flush_timeout", 2))
        scheme = "https" if config.get("https", True) else "http"
        host = config.get("host") or "collector.galileo.mashape.com"
        port = int(config.get("port") or 443)
        self.url = f"{scheme}://{host}:{port}/1.1.0/single"
        self.sender: HttpSender = senders(services).http(
            self.url,
            float(config.get("connection_timeout", 30)),
            60.0,
            verify=bool(config.get("https_verify")),
        )
        self.clock = senders(services).clock
        self.entries: list[bytes] = []
        self.buffered = 0
        self.dropped = 0
        self.batches_sent = 0
        self._flush_timer: IDelayedCall | None = None

    def log(self, ctx: RequestContext) -> PhaseResult:
        entry = encode(alf_entry(ctx, self.capture_bodies))
        if self.buffered + len(entry) > BUFFER_LIMIT:
            self.dropped += 1
            log.warn("galileo: buffer full, entry dropped ({n} so far)", n=self.dropped)
            return None
        self.entries.append(entry)
        self.buffered += len(entry)
        if len(self.entries) >= self.queue_size:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = self.clock.call_later(self.flush_timeout, self.flush)
        return None

    def flush(self) -> None:
        """Send what is buffered now, as one ALF."""
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        size = sum(len(e) for e in entries)
        head = encode(alf_document(self.token, self.environment, []))
        # splice the already-encoded entries into the document's empty list
        body = head.replace(b'"entries":[]', b'"entries":[' + b",".join(entries) + b"]", 1)
        Deferred.fromCoroutine(self._send(body, size))

    async def _send(self, body: bytes, size: int) -> None:
        request = self.sender.request_bytes("POST", body)
        try:
            for attempt in range(self.retry_count + 1):
                try:
                    status = await self.sender.send(request)
                except LogDropped as e:
                    why = str(e)
                else:
                    if 200 <= status < 300:
                        self.batches_sent += 1
                        return
                    why = f"status {status}"
                if attempt >= self.retry_count:
                    break
                delay = min(MAX_RETRY_DELAY, float(2**attempt))
                log.warn("galileo: send failed ({why}), retrying in {d} s", why=why, d=delay)
                await self.clock.sleep(delay)
            self.dropped += 1
            log.error("galileo: ALF dropped after {n} retries", n=self.retry_count)
        finally:
            self.buffered -= size
