# -*- test-case-name: tests.unit.test_pipeline -*-
"""The respond step of the proxy pipeline: what the client is sent.

:class:`Responder` relays an upstream response (our headers, the header_filter
phase, the body through body_filter with the client's backpressure) and sends the
responses the proxy makes itself: a plugin's (generated in access), SPEC §3.5 error
pages, the 503 of an upstream without a healthy peer, and whole bodies such as the
router's 404.  Every response it makes carries a ``Date`` (computed at most once a
second).

:class:`kongtx.proxy.pipeline.ProxyPipeline` owns one and calls it directly (no
layer in between: the hot path pays one call per step, as when these were its own
methods).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from kongtx import SERVER_NAME
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.balanced import NO_PEER_MESSAGE
from kongtx.proxy.context import Downstream, PluginChain, ProxyContext
from kongtx.proxy.errors import JSON_TYPE, error_page, json_body
from kongtx.proxy.upstream_response import UpstreamResponse

log = logger("kongtx.proxy")

#: Response headers the proxy sets itself (whatever the upstream sent under these names).
_OURS_ON_RESPONSES: Final = frozenset(
    {"content-length", "via", "x-kong-upstream-latency", "x-kong-proxy-latency"}
)
#: (``Final``: a C static for the compiled code, not a module dictionary lookup)
_VIA: Final = SERVER_NAME
#: the header entries a relayed response gets, as ``HeaderList`` keeps them (lower-case
#: name, name, value): made once, not per response (a tuple is immutable: shared)
_VIA_ENTRY: Final = ("via", "Via", _VIA)
#: the latency headers' entries for the usual latencies (0 to 99 ms)
_UPSTREAM_LATENCY: Final = [
    ("x-kong-upstream-latency", "X-Kong-Upstream-Latency", str(ms)) for ms in range(100)
]
_PROXY_LATENCY: Final = [
    ("x-kong-proxy-latency", "X-Kong-Proxy-Latency", str(ms)) for ms in range(100)
]
#: Content-Length entries by length (bounded: cleared when full)
_LENGTHS: Final[dict[int, tuple[str, str, str]]] = {}


def _latency_entry(table: list[tuple[str, str, str]], ms: int) -> tuple[str, str, str]:
    """The entry of a latency header for ``ms`` (0 to 99 ms: the one made once)."""
    if 0 <= ms < 100:
        return table[ms]
    first = table[0]
    return (first[0], first[1], str(ms))


def _length_entry(length: int) -> tuple[str, str, str]:
    """The ``Content-Length`` entry for ``length``, made once per length."""
    entry = _LENGTHS.get(length)
    if entry is None:
        if len(_LENGTHS) >= 1024:
            _LENGTHS.clear()
        entry = _LENGTHS[length] = ("content-length", "Content-Length", str(length))
    return entry


async def _maybe_await(result: object) -> None:
    if result is not None and inspect.isawaitable(result):
        await result


class BodyRelay:
    """Upstream body -> body_filter -> client; ``ended`` says how it ended.

    The Deferred to wait on is made only when the body is still coming
    (:meth:`wait`): a small response read whole with its headers ends while it is
    attached, and the pipeline goes on without one.
    """

    __slots__ = ("_done", "chain", "ctx", "down", "ended", "failure")

    def __init__(self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream) -> None:
        self.ctx = ctx
        self.chain = chain
        self.down = down
        #: ``None`` while the body is coming, then ``True`` (complete) or ``False`` (failed)
        self.ended: bool | None = None
        self._done: Deferred[bool] | None = None
        self.failure: Failure | None = None

    def wait(self) -> Deferred[bool]:
        """Fires with :attr:`ended` once the body ended (cancel: the client went away)."""
        done = self._done = Deferred()
        if self.ended is not None:
            done.callback(self.ended)
        return done

    def write(self, data: bytes) -> None:
        if self.chain is not None:
            data = self.chain.body_filter(self.ctx, data, False)
        if data and not self.down.gone:
            self.ctx.response_size += len(data)
            self.down.write(data)

    def finish(self) -> None:
        if self.chain is not None:
            tail = self.chain.body_filter(self.ctx, b"", True)
            if tail and not self.down.gone:
                self.ctx.response_size += len(tail)
                self.down.write(tail)
        self._end(True)

    def fail(self, reason: Failure) -> None:
        self.failure = reason
        self._end(False)

    def _end(self, complete: bool) -> None:
        if self.ended is None:
            self.ended = complete
            done = self._done
            if done is not None and not done.called:
                done.callback(complete)


class Responder:
    """Sends the client its response: relayed from the upstream, or made here.

    Args:
        clock: the node clock (the ``Date`` header).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._date_second = -1
        self._date_text = ""
        #: the ``Date`` header entry of :meth:`http_date`'s second
        self._date_entry = ("date", "Date", "")

    def http_date(self) -> str:
        """An HTTP ``Date`` for now, computed at most once per second (hot path)."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date_text = formatdate(now, usegmt=True)
            self._date_entry = ("date", "Date", self._date_text)
        return self._date_text

    # ----------------------------------------------------------------- made here

    def send_whole(
        self, down: Downstream, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """A whole response: ``Content-Length`` set, ``Date`` added unless present."""
        if down.gone:
            return
        headers = [h for h in headers if h[0].lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        if not any(h[0].lower() == "date" for h in headers):
            headers.insert(0, ("Date", self.http_date()))
        down.send_head(status, headers)
        if body:
            down.write(body)
        down.finish()

    async def send_generated(
        self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream
    ) -> None:
        """A plugin answered in access: header_filter and body_filter still run."""
        if chain is not None:
            await _maybe_await(chain.header_filter(ctx))
        body = ctx._response_body
        if chain is not None:
            body = chain.body_filter(ctx, body, False) + chain.body_filter(ctx, b"", True)
        ctx.response_size = len(body)
        self.send_whole(down, ctx.status, ctx.response_headers.items(), body)

    def send_error(
        self, ctx: ProxyContext | None, down: Downstream, status: int, accept: str | None
    ) -> None:
        """The SPEC §3.5 error page for ``status``, in the type ``accept`` prefers."""
        content_type, body = error_page(status, accept)
        if ctx is not None:
            ctx.status = status
            ctx.response_size = len(body)
        self.send_whole(
            down, status, [("Content-Type", content_type), ("Server", SERVER_NAME)], body
        )

    def send_no_peer(self, ctx: ProxyContext, down: Downstream) -> None:
        """503: no healthy address in the upstream (Kong 1.x's JSON message)."""
        body = json_body({"message": NO_PEER_MESSAGE})
        ctx.status = 503
        ctx.response_size = len(body)
        self.send_whole(down, 503, [("Content-Type", JSON_TYPE), ("Server", SERVER_NAME)], body)

    # ----------------------------------------------------------------- relayed

    def relay(
        self,
        ctx: ProxyContext,
        chain: PluginChain | None,
        down: Downstream,
        response: UpstreamResponse,
    ) -> Awaitable[None] | None:
        """Response headers, header_filter, then the body; ``None`` when nothing waited
        (a small response read with its headers, synchronous plugins), else what to
        await for the rest."""
        ctx.status = response.status
        headers = response.headers
        # One scan finds what we replace (seldom sent: the list is then kept as it is)
        # and the upstream's Date, then we append (not one scan per ``set``).
        items = headers._items  # (lower-case name, name, value), as HeaderList keeps them
        ours = dated = False
        for item in items:
            low = item[0]
            if low in _OURS_ON_RESPONSES:
                ours = True
            elif low == "date":
                dated = True
        if ours:
            items = headers._items = [e for e in items if e[0] not in _OURS_ON_RESPONSES]
        length = response.length
        if length is not None:
            # for HEAD too: the length the GET would have had (the body is never sent)
            items.append(_length_entry(length))
        if not dated:
            self.http_date()
            items.append(self._date_entry)
        items.append(_VIA_ENTRY)
        items.append(_latency_entry(_UPSTREAM_LATENCY, ctx.upstream_latency or 0))
        items.append(_latency_entry(_PROXY_LATENCY, ctx.proxy_latency or 0))
        ctx.response_headers = headers
        if chain is not None:
            try:
                pending = chain.header_filter(ctx)
            except BaseException:
                response.stopProducing()
                raise
            if pending is not None:
                relay = BodyRelay(ctx, chain, down)
                return _after_filter(pending, response, lambda: self._relay_body(relay, response))
        return self._relay_body(BodyRelay(ctx, chain, down), response)

    def _relay_body(self, relay: BodyRelay, response: UpstreamResponse) -> Awaitable[None] | None:
        """The head to the client, then the body through ``relay``."""
        ctx, down = relay.ctx, relay.down
        if down.gone:
            response.stopProducing()
            return None
        # the upstream's status line, as nginx relays it, unless a plugin set another status
        reason = response.reason if ctx.status == response.status else ""
        down.send_head_lowered(ctx.status, ctx.response_headers._items, reason)
        # What was read with the headers is delivered at once (already in memory);
        # a body still coming is paced by the client's backpressure.
        response.deliver(relay)
        if relay.ended is None:
            return self._relay_rest(ctx, down, response, relay)
        self._relay_ended(ctx, down, relay)
        return None

    async def _relay_rest(
        self, ctx: ProxyContext, down: Downstream, response: UpstreamResponse, relay: BodyRelay
    ) -> None:
        """The rest of a body still coming from the upstream."""
        down.register_producer(response)
        try:
            await relay.wait()
        except CancelledError:
            response.stopProducing()
            raise
        finally:
            down.unregister_producer()
        self._relay_ended(ctx, down, relay)

    def _relay_ended(self, ctx: ProxyContext, down: Downstream, relay: BodyRelay) -> None:
        if relay.ended:
            if not down.gone:
                down.finish()
        else:
            log.info(
                "upstream body failed for {url}: {reason}",
                url=ctx.upstream_url,
                reason=relay.failure.getErrorMessage() if relay.failure else "?",
            )
            down.abort()


async def _after_filter(
    pending: Awaitable[None],
    response: UpstreamResponse,
    then: Callable[[], Awaitable[None] | None],
) -> None:
    """The rest of a relay once a header_filter that waits is done."""
    try:
        await pending
    except BaseException:
        response.stopProducing()
        raise
    rest = then()
    if rest is not None:
        await rest
