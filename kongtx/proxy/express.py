# -*- test-case-name: tests.unit.test_pipeline -*-
"""A request on the pipeline's express path, waiting for its upstream response.

:meth:`kongtx.proxy.pipeline.ProxyPipeline.start` serves a request whose every step
is at hand (router and plugin chain cached, an access phase that did not wait, a
plain API, a pooled upstream connection) without a coroutine: it begins the
upstream exchange with an :class:`ExpressRequest` as the exchange's listener
(:class:`kongtx.proxy.upstream_response.ResponseListener`), which the exchange tells of the
response or the failure directly, with no Deferred in between.  The front-end
keeps it to cancel it (the client went away) and is told how it ended
(:meth:`ExpressRequest.watch`).

Behaviour is the general path's (``ProxyPipeline._proxy``): the same relay, error
pages, latencies, log phase and observers; a stale pooled connection is retried
once on a new one; a relay that must wait (a header_filter that waits, a body
still coming) goes on in a coroutine.

A balanced API's request comes here with the peer its balancer picked
(:attr:`ExpressRequest.pick`, on that peer's pooled connection): the attempt's
outcome goes to the balancer's outcome listeners as on the general path
(:meth:`kongtx.proxy.balanced.Balancing.request`), and a stale connection goes on
there (a new connection to the same peer, then the balancer's retries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from kongtx.balancer.balancer import Balancer, Pick
from kongtx.proxy.context import Downstream, PluginChain, ProxyContext
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.exchange import Exchange
from kongtx.proxy.request import UpstreamRequest
from kongtx.proxy.upstream_response import StaleConnection, UpstreamResponse

if TYPE_CHECKING:
    from kongtx.proxy.pipeline import ProxyPipeline

#: told once the request ended: ``(request, None)`` or the error (``CancelledError``:
#: the client went away; anything else: a bug, the front-end's 500)
OnEnd = Callable[["ExpressRequest", BaseException | None], None]


class ExpressRequest:
    """One request waiting for its upstream response (the exchange's listener)."""

    __slots__ = (
        "_on_end",
        "_pipeline",
        "access_done",
        "balancer",
        "body",
        "chain",
        "ctx",
        "done",
        "down",
        "error",
        "exchange",
        "length",
        "pick",
        "request",
        "tag",
        "waiting",
    )

    def __init__(
        self,
        pipeline: ProxyPipeline,
        ctx: ProxyContext,
        chain: PluginChain | None,
        down: Downstream,
        access_done: float,
        request: UpstreamRequest,
        body: IO[bytes] | None,
        length: int,
    ) -> None:
        self._pipeline = pipeline
        self.ctx = ctx
        self.chain = chain
        self.down = down
        #: when the access phase ended (the upstream latency counts from here)
        self.access_done = access_done
        self.request = request
        self.body = body
        self.length = length
        #: the exchange until it answered (cancelled when the client goes away)
        self.exchange: Exchange | None = None
        #: what the request waits on after that: a retry, or a relay still going on
        self.waiting: Deferred[Any] | None = None
        self.done = False
        self.error: BaseException | None = None
        self._on_end: OnEnd | None = None
        #: the front-end's own reference (its parsed request)
        self.tag: object = None
        #: a balanced API's balancer, and the peer the request holds until it ends
        self.balancer: Balancer | None = None
        self.pick: Pick | None = None

    def watch(self, on_end: OnEnd, tag: object) -> None:
        """Call ``on_end`` once the request ended (at once if it already has)."""
        self.tag = tag
        if self.done:
            on_end(self, self.error)
        else:
            self._on_end = on_end

    # ------------------------------------------------------------ the exchange's listener

    def response(self, response: UpstreamResponse) -> None:
        self.exchange = None
        if self.done:
            response.stopProducing()
            return
        pick = self.pick
        if pick is not None:
            balancing, balancer = self._pipeline.balancing, self.balancer
            assert balancing is not None and balancer is not None
            balancing.balancers.report(balancer.upstream, pick, "http", response.status)
        pipeline, ctx = self._pipeline, self.ctx
        now = pipeline.clock.seconds()
        ctx.upstream_latency = max(0, int((now - self.access_done) * 1000))
        try:
            rest = pipeline.respond.relay(ctx, self.chain, self.down, response)
        except BaseException as e:
            self._end(e)
            return
        if rest is None:
            self._end(None, now)  # relayed whole in the same instant: one clock read
            return
        waiting = self.waiting = Deferred.fromCoroutine(_wait(rest))
        waiting.addBoth(self._rest_ended)

    def failed(self, failure: Failure) -> None:
        self.exchange = None
        self.waiting = None
        if self.done:
            return
        error = failure.value
        balancer = self.balancer
        if isinstance(error, StaleConnection) and balancer is not None:
            # a new connection to the same peer, then the balancer's retries, as on
            # the general path; the attempt owns the pick until it answers
            pick, self.pick = self.pick, None
            req = self.request
            balancing = self._pipeline.balancing
            assert balancing is not None
            waiting = self.waiting = Deferred.fromCoroutine(
                balancing.request(self.ctx, balancer, req, self.body, self.length, pick, pool=False)
            )
            waiting.addCallbacks(self._picked, self.failed)
            return
        if isinstance(error, StaleConnection):
            req = self.request
            waiting = self.waiting = self._pipeline.client.retry_on_new_connection(
                req.method, req.url, req.headers, self.body, self.length, req.origin
            )
            waiting.addCallbacks(self._retried, self.failed)
            return
        if isinstance(error, UpstreamError):
            pick = self.pick
            if pick is not None:
                # this attempt's failure (a retry's are told by Balancing.request)
                self.pick = None
                assert balancer is not None and self._pipeline.balancing is not None
                self._pipeline.balancing.attempt_failed(balancer, pick, error)
            try:
                self._pipeline.upstream_failed(self.ctx, self.down, error)
            except BaseException as e:
                self._end(e)
                return
            self._end(None)
            return
        self._end(error)

    # ------------------------------------------------------------ the front-end's side

    def cancel(self) -> None:
        """The client went away: abandon the upstream request (or the relay)."""
        if self.done:
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.cancel()
            self._end(CancelledError())
            return
        waiting = self.waiting
        if waiting is not None:
            waiting.cancel()  # its errback ends the request

    # ------------------------------------------------------------ internals

    def _retried(self, response: UpstreamResponse) -> None:
        self.waiting = None
        self.response(response)

    def _picked(self, picked: tuple[Pick, UpstreamResponse] | None) -> None:
        """The balanced attempts after a stale connection answered (outcomes told)."""
        self.waiting = None
        if picked is None:
            if not self.done:
                self._pipeline.respond.send_no_peer(self.ctx, self.down)
                self._end(None)
            return
        pick, response = picked  # its outcome told: the relay alone, then the pick held
        balancer = self.balancer
        assert balancer is not None
        self.response(response)
        if self.done:
            balancer.release(pick)
        else:
            self.pick = pick

    def _release(self) -> None:
        pick, self.pick = self.pick, None
        if pick is not None and self.balancer is not None:
            self.balancer.release(pick)

    def _rest_ended(self, result: object) -> None:
        self.waiting = None
        self._end(result.value if isinstance(result, Failure) else None)

    def _end(self, error: BaseException | None, now: float | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            if self.pick is not None:
                self._release()
            self._pipeline.end_request(self.ctx, self.chain, now)
        except BaseException as e:
            error = error or e
        self.error = error
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self, error)


async def _wait(rest: Awaitable[None]) -> None:
    await rest


# ------------------------------------------------------- when the express path stops


class General:
    """The express path does not apply: the pipeline goes on with the general one
    (``ProxyPipeline._proxy``)."""

    __slots__ = ()


#: (``Final``: a C static for the compiled code)
GENERAL: Final = General()


class Resume(General):
    """The express path stopped for want of a pooled connection: what it did."""

    __slots__ = ("access_done", "balancer", "pick", "request")

    def __init__(
        self,
        request: UpstreamRequest,
        access_done: float,
        balancer: Balancer | None,
        pick: Pick | None,
    ) -> None:
        self.request = request
        self.access_done = access_done
        #: the balanced API's balancer and the peer picked for the first attempt
        self.balancer = balancer
        self.pick = pick
