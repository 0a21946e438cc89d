# -*- test-case-name: tests.unit.test_pipeline -*-
"""One proxied request, start to end: resolve -> plugins -> upstream -> respond.

DESIGN.md §3.  The pipeline never sees twisted.web: a front-end (today
``kongtx.proxy.resource``; a leaner protocol later) hands it an
:class:`IncomingRequest` and a :class:`Downstream` to write to, so the same
code serves whatever parses HTTP.  Plugins see a :class:`ProxyContext`, which
implements ``kongtx.plugins.base.RequestContext``.

Order of events, as in Kong 0.9:

1. the router (from the node cache, rebuilt only after an ``apis`` change) picks
   the API, or the request ends in the SPEC §3.1 404 and no plugin runs;
2. the access phase of the API's plugin chain (a plugin may answer itself);
3. the upstream request is built from what the access phase left (SPEC §3.2) and
   sent; ``X-Kong-Proxy-Latency`` measures steps 1-3 up to now;
4. response headers (minus hop-by-hop) + ``Via`` + latency headers, then the
   header_filter phase; the body is streamed through body_filter;
5. the log phase runs on the next reactor turn after the response finished, so it
   never delays the client, and it runs for every request that matched an API,
   rejected ones included (our deliberate difference from Kong 0.9).

The request, the client side and the plugin chain the pipeline works with (and what
goes upstream for a request) are in :mod:`kongtx.proxy.context`; balanced upstreams
in :mod:`kongtx.proxy.balanced`; what the client is sent (the relayed response,
generated and error responses) in :mod:`kongtx.proxy.respond`; the log phase's queue
in :mod:`kongtx.proxy.log_phase`; upgraded requests (WebSocket) in
:mod:`kongtx.proxy.upgrade`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kongtx import SERVER_NAME
from kongtx.balancer.balancer import Balancer, Pick
from kongtx.balancer.registry import Balancers, _Missing
from kongtx.clock import Clock
from kongtx.log import logger
from kongtx.proxy.balanced import Balancing, release_pick
from kongtx.proxy.context import (
    ChainSource,
    Downstream,
    IncomingRequest,
    PluginChain,
    ProxyContext,
    RouterSource,
    is_upgrade,
    split_absolute_form,
    upstream_request_of,
)
from kongtx.proxy.errors import JSON_TYPE, UpstreamError
from kongtx.proxy.express import GENERAL, ExpressRequest, General, Resume
from kongtx.proxy.log_phase import LogQueue
from kongtx.proxy.request import TrustedIps
from kongtx.proxy.respond import Responder
from kongtx.proxy.upgrade import UpgradeProxy
from kongtx.proxy.upstream import UpstreamClient
from kongtx.router import Router, not_found_body

log = logger("kongtx.proxy")


class ProxyPipeline:
    """resolve -> plugins -> upstream -> respond, for any front-end."""

    def __init__(
        self,
        routers: RouterSource,
        client: UpstreamClient,
        clock: Clock,
        *,
        trusted_ips: TrustedIps | None = None,
        plugins: ChainSource | None = None,
        balancers: Balancers | None = None,
    ) -> None:
        self.routers = routers
        #: upstreams by name (an API whose upstream_url host names one is balanced)
        self.balancers = balancers
        #: the balanced path (the express one's too); ``None`` without balancers
        self.balancing = Balancing(balancers, client) if balancers is not None else None
        self.client = client
        self.clock = clock
        #: now, read from the reactor directly (``Clock.seconds`` is an interpreted call,
        #: made several times per request)
        self._now: Callable[[], float] = clock.reactor.seconds
        self.trusted_ips = trusted_ips or TrustedIps()
        self.plugins = plugins
        #: the log phase of finished requests, run after their responses are out
        self._logs = LogQueue(clock)
        #: called with each routed request's context once it is answered (metrics);
        #: an empty list costs one loop test per request
        self.observers: list[Callable[[ProxyContext], None]] = []
        #: what the client is sent: relayed responses, generated ones, error pages
        self.respond = Responder(clock)
        #: upgraded requests (WebSocket): the handshake, then a tunnel
        self._upgrades = UpgradeProxy(client, self.respond, balancers)

    # ----------------------------------------------------------------- entry

    def start(
        self, incoming: IncomingRequest, down: Downstream
    ) -> ExpressRequest | Coroutine[Any, Any, None] | None:
        """Serve one request, without a coroutine as far as nothing has to wait.

        The front-end's entry.  The *express* path is taken when the router and the
        API's plugin chain are cached, the access phase (if any plugin runs) did not
        wait nor answer, a balanced API's upstream and targets are cached (names
        resolved) so its balancer picks at once, the request is no upgrade and has no
        body still arriving, and a pooled upstream connection (to the picked peer) is
        at hand: then the upstream response continues the request in the exchange's
        listener, with no Deferred.  Anything else is the general path
        (:meth:`handle`'s steps), taken over from where the express one stopped (with
        no pooled connection: the request built and the peer picked).

        Returns:
            ``None`` when the request is already served (the 404, an error page);
            the :class:`kongtx.proxy.express.ExpressRequest` waiting for its response
            (``cancel()`` it when the client goes away; ``watch()`` tells how it
            ended: what :meth:`handle` would raise, or ``None``); or the coroutine
            that serves the rest, for the caller to run.
        """
        started = self._now()
        router = self.routers.peek()
        if router is None:
            return self.handle(incoming, down)
        ctx = self._route(router, incoming, down, started)
        if ctx is None:
            return None
        chain: PluginChain | None = None
        try:
            if self.plugins is not None:
                chain = self.plugins.chain_at(ctx.match.target.chain_key)
                if chain is None:
                    return self._serve(ctx, down)
                if chain.idle:
                    chain = None  # no plugin for this API: no phase would do anything
                else:
                    pending = chain.access(ctx)
                    if pending is not None or ctx.responded:
                        return self._serve(ctx, down, chain, True, pending)
            waiting = self._proxy_express(ctx, chain, down)
        except BaseException:
            self.end_request(ctx, chain)
            raise
        if isinstance(waiting, General):
            return self._serve(ctx, down, chain, True, None, waiting)
        return waiting

    async def handle(self, incoming: IncomingRequest, down: Downstream) -> None:
        """Serve one request to completion (or until the client goes away)."""
        started = self._now()
        router = self.routers.peek()
        if router is None:
            router = await self.routers.get()
        ctx = self._route(router, incoming, down, started)
        if ctx is not None:
            await self._serve(ctx, down)

    def _route(
        self, router: Router, incoming: IncomingRequest, down: Downstream, started: float
    ) -> ProxyContext | None:
        """The request's context, or ``None`` once no API matched (the 404 is sent)."""
        headers = incoming.headers
        # every Host value, then every X-Host-Override one (one pass, no lower-casing)
        host_values: list[str] = []
        overrides: list[str] | None = None
        for entry in headers._items:
            lname = entry[0]
            if lname == "host":
                host_values.append(entry[2])
            elif lname == "x-host-override":
                if overrides is None:
                    overrides = []
                overrides.append(entry[2])
        if overrides is not None:
            host_values.extend(overrides)
        uri = incoming.uri
        if not uri.startswith("/"):
            # absolute-form (GET http://host/path): its host comes first (RFC 7230 §5.4)
            target_host, uri = split_absolute_form(uri)
            incoming.uri = uri
            if target_host:
                host_values.insert(0, target_host)
        q = uri.find("?")
        path, raw_query = (uri, "") if q < 0 else (uri[:q], uri[q + 1 :])
        match = router.match(host_values, path)
        if match is None:
            body = not_found_body(host_values, path)
            self.respond.send_whole(
                down, 404, [("Content-Type", JSON_TYPE), ("Server", SERVER_NAME)], body
            )
            return None
        trusted = self.trusted_ips
        client_ip = (
            trusted.client_ip(incoming.peer_ip, headers.get_all_lowered("x-forwarded-for"))
            if trusted
            else incoming.peer_ip  # nobody's X-Forwarded-For is believed: no lookup
        )
        return ProxyContext(match.api, match, incoming, client_ip, path, raw_query, started)

    async def _serve(
        self,
        ctx: ProxyContext,
        down: Downstream,
        chain: PluginChain | None = None,
        accessed: bool = False,
        pending: Awaitable[None] | None = None,
        resume: General | None = None,
    ) -> None:
        """The request from its plugin chain on (the general path).

        With ``accessed`` the access phase already ran on ``chain`` (the express path
        stopped after it) and ``pending`` is what it left to wait for; ``resume``: the
        express path stopped later, with no pooled connection at hand (what it did).
        """
        try:
            if not accessed and self.plugins is not None:
                chain = self.plugins.chain_at(ctx.match.target.chain_key)
                if chain is None:
                    chain = await self.plugins.chain_for(ctx.api)
                if chain.idle:
                    chain = None  # no plugin for this API: no phase would do anything
                if chain is not None:
                    pending = chain.access(ctx)  # None when every plugin answered synchronously
            if pending is not None:
                await pending
            if ctx.responded:
                await self.respond.send_generated(ctx, chain, down)
            else:
                await self._proxy(ctx, chain, down, resume)
        finally:
            self.end_request(ctx, chain)

    def end_request(
        self, ctx: ProxyContext, chain: PluginChain | None, now: float | None = None
    ) -> None:
        """The request is over: its total latency, its log phase queued, the observers."""
        if now is None:
            now = self._now()
        ctx.request_latency = max(0, int((now - ctx.started_at) * 1000))
        if chain is not None and ctx.status:
            self._logs.add(chain, ctx)
        for observe in self.observers:
            observe(ctx)

    # ----------------------------------------------------------------- express

    def _proxy_express(
        self, ctx: ProxyContext, chain: PluginChain | None, down: Downstream
    ) -> ExpressRequest | General | None:
        """:meth:`_proxy` without a coroutine, on a pooled connection.

        ``GENERAL`` when it does not apply (nothing done); a :class:`Resume` (a
        ``General`` too) when no pooled connection is at hand (the request built, the
        proxy latency measured, a balanced peer picked: :meth:`_proxy` goes on from
        there); ``None`` once a response was sent (an error page, no peer); else the
        request waiting for its response (the exchange's listener).
        """
        if ctx._stream is not None:
            return GENERAL  # a body still arriving from the client
        balancer: Balancer | None = None
        balancing = self.balancing
        if balancing is not None:
            found = balancing.peek_target(ctx.match.target)
            if found is not None:
                if isinstance(found, _Missing):
                    return GENERAL  # not known yet: loaded on the general path
                balancer = found
        if ctx.method == "GET" and is_upgrade(ctx._headers):
            return GENERAL
        req = upstream_request_of(ctx, False)
        access_done = self._now()
        ctx.proxy_latency = max(0, int((access_done - ctx.started_at) * 1000))
        body, length = ctx.body_stream
        express = ExpressRequest(self, ctx, chain, down, access_done, req, body, length)
        address: tuple[str, int] | None = None
        pick: Pick | None = None
        if balancer is not None:
            pick = balancer.pick(ctx)
            if pick is None:
                self.respond.send_no_peer(ctx, down)
                self.end_request(ctx, chain)
                return None
            express.balancer, express.pick = balancer, pick
            address = (pick.host, pick.port)
        try:
            exchange = self.client.pooled_exchange(
                req.method, req.url, req.headers, body, length, express, address, req.origin
            )
        except UpstreamError as e:
            if pick is not None:
                assert balancer is not None and balancing is not None
                balancing.attempt_failed(balancer, pick, e)
            self.upstream_failed(ctx, down, e)
            self.end_request(ctx, chain)
            return None
        if exchange is None:
            # no pooled connection at hand: connect on the general path
            return Resume(req, access_done, balancer, pick)
        express.exchange = exchange
        exchange.begin()
        return express

    def upstream_failed(self, ctx: ProxyContext, down: Downstream, e: UpstreamError) -> None:
        log.info(
            "upstream error {status} for {url}: {reason}",
            status=e.status,
            url=ctx.upstream_url,
            reason=e.reason,
        )
        self.respond.send_error(ctx, down, e.status, ctx._incoming.headers.get("accept"))

    # ----------------------------------------------------------------- proxying

    async def _proxy(
        self,
        ctx: ProxyContext,
        chain: PluginChain | None,
        down: Downstream,
        resume: General | None = None,
    ) -> None:
        incoming = ctx._incoming
        balancing = self.balancing
        pick: Pick | None = None
        if isinstance(resume, Resume):
            # the express path built the request and picked the peer
            upgrade = False
            req, access_done = resume.request, resume.access_done
            balancer, pick = resume.balancer, resume.pick
        else:
            upgrade = incoming.method == "GET" and is_upgrade(ctx._headers)
            req = upstream_request_of(ctx, upgrade)
            balancer = None
            if balancing is not None:
                found = balancing.peek_target(ctx.match.target)
                balancer = await balancing.load(ctx.api) if isinstance(found, _Missing) else found
            access_done = self._now()
            ctx.proxy_latency = max(0, int((access_done - ctx.started_at) * 1000))

        if upgrade:
            accept = incoming.headers.get("accept")
            await self._upgrades.serve(ctx, req, down, accept, balancer)
            return

        body, length = ctx.body_stream
        if body is not None:
            body.seek(0)
        try:
            if balancer is None:
                client, stream, origin = self.client, ctx._stream, req.origin
                started = (
                    client.start_pooled(req.method, req.url, req.headers, body, length, origin)
                    if stream is None
                    else None
                )
                response = await (
                    started
                    if started is not None
                    else client.request(
                        req.method, req.url, req.headers, body, length, stream=stream, origin=origin
                    )
                )
            else:
                assert balancing is not None
                picked = await balancing.request(ctx, balancer, req, body, length, pick)
                if picked is None:
                    self.respond.send_no_peer(ctx, down)
                    return
                pick, response = picked
        except UpstreamError as e:
            self.upstream_failed(ctx, down, e)
            return
        try:
            ctx.upstream_latency = max(0, int((self._now() - access_done) * 1000))
            rest = self.respond.relay(ctx, chain, down, response)
            if rest is not None:
                await rest
        finally:
            release_pick(balancer, pick)
