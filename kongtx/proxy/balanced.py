"""The load-balancing part of the proxy pipeline (Kong 0.10+ upstreams and targets).

An API whose ``upstream_url`` host names an upstream is balanced: each request goes
to a peer its :class:`kongtx.balancer.balancer.Balancer` picks, and a failed
connect is retried on another peer.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.defer import CancelledError

from kongtx.balancer.balancer import Balancer, Pick
from kongtx.balancer.registry import Balancers, _Missing, lookup_host
from kongtx.log import logger
from kongtx.proxy.context import ProxyContext
from kongtx.proxy.errors import ConnectError, UpstreamError
from kongtx.proxy.request import ApiTarget
from kongtx.proxy.upstream import UpstreamClient
from kongtx.proxy.upstream import log as client_log
from kongtx.proxy.upstream_request import split_url
from kongtx.proxy.upstream_response import UpstreamResponse
from kongtx.store.interface import RowView

log = logger("kongtx.proxy")

#: Retries of a balanced request after a connect failure (Kong 0.10's API ``retries`` default).
BALANCER_RETRIES = 5
#: Kong 1.x's answer when every peer of an upstream is unhealthy (or it has none).
NO_PEER_MESSAGE = "failure to get a peer from the ring-balancer"


class Balancing:
    """Which upstream an API names, its balancer, and a request sent to its peers.

    Args:
        balancers: the node's upstreams by name.
        client: the pipeline's upstream client.
    """

    def __init__(self, balancers: Balancers, client: UpstreamClient) -> None:
        self.balancers = balancers
        self.client = client
        #: upstream_url -> its host, parsed once per URL
        self._upstream_names: dict[str, str] = {}

    def upstream_name(self, api: RowView) -> str:
        """The host of the API's ``upstream_url`` (an upstream's name, if it is one)."""
        url = api.get("upstream_url") or ""
        name = self._upstream_names.get(url)
        if name is None:
            if len(self._upstream_names) > 4096:
                self._upstream_names.clear()
            name = self._upstream_names[url] = lookup_host(url)
        return name

    def peek(self, api: RowView) -> Balancer | None | _Missing:
        """The balancer of the upstream the API's upstream_url host names, from the cache.

        Hot path for every API, synchronous: one dict lookup and one cache peek (a
        negative ``upstreams:<host>`` entry when the host is no upstream).
        """
        return self.balancers.peek(self.upstream_name(api))

    def peek_target(self, target: ApiTarget) -> Balancer | None | _Missing:
        """:meth:`peek` for the API whose compiled form (``Match.target``) is ``target``:
        the upstream's name is kept on it (no row read, no dict lookup)."""
        name = target.upstream_name
        if name is None:
            name = target.upstream_name = lookup_host(target.upstream_url)
        return self.balancers.peek(name)

    async def load(self, api: RowView) -> Balancer | None:
        """:meth:`peek` on a cache miss: load the rows, resolve the targets."""
        balancers = self.balancers
        name = self.upstream_name(api)
        try:
            return await balancers.get(name)
        except CancelledError:
            raise
        except Exception as e:
            # The datastore is unreachable and the rows are not cached: proxy as an
            # API without upstream would be (a name that is only an upstream then
            # fails to resolve: 502), rather than fail every API with a cold entry.
            log.warn(
                "could not load upstream {name}: {error}; proxying without balancing",
                name=name,
                error=e,
            )
            return None

    async def request(
        self,
        ctx: ProxyContext,
        balancer: Balancer,
        req: Any,
        body: IO[bytes] | None,
        length: int,
        pick: Pick | None = None,
        pool: bool = True,
    ) -> tuple[Pick, UpstreamResponse] | None:
        """Send to a peer of ``balancer``; a failed connect is retried on another.

        Only a connect failure or connect timeout (nothing sent yet) of a replayable
        body is retried, at most :data:`BALANCER_RETRIES` times, never on the same
        address twice in a row when another is healthy.  Every attempt's outcome
        goes to the outcome listeners.  ``None``: no healthy peer.

        ``pick``: the first attempt's peer, already picked (the express path stopped
        there); ``pool=False``: that attempt on a new connection (its pooled one was
        stale).
        """
        if not pool:
            # what the client logs when it retries a stale pooled connection itself
            _, host, port, _ = split_url(req.url, req.origin)
            client_log.debug(
                "pooled connection to {host}:{port} was closed; retrying", host=host, port=port
            )
        avoid: str | None = None
        attempt = 0
        while True:
            if pick is None:
                pick = balancer.pick(ctx, avoid)
                if pick is None:
                    return None
            if body is not None:
                body.seek(0)
            try:
                response = await self.client.request(
                    req.method,
                    req.url,
                    req.headers,
                    body,
                    length,
                    stream=ctx._stream,
                    address=(pick.host, pick.port),
                    pool=pool,
                    origin=req.origin,
                )
            except UpstreamError as e:
                self.attempt_failed(balancer, pick, e)
                if (
                    isinstance(e, ConnectError)
                    and ctx._stream is None
                    and attempt < BALANCER_RETRIES
                ):
                    attempt += 1
                    avoid = pick.address
                    log.info(
                        "connecting to {address} ({target}) of {upstream} failed: {reason};"
                        " retry {attempt}",
                        address=pick.address,
                        target=pick.target,
                        upstream=balancer.name,
                        reason=e.reason,
                        attempt=attempt,
                    )
                    pick, pool = None, True
                    continue
                raise
            except BaseException:
                balancer.release(pick)
                raise
            self.balancers.report(balancer.upstream, pick, "http", response.status)
            return pick, response

    def attempt_failed(self, balancer: Balancer, pick: Pick, e: UpstreamError) -> None:
        """An attempt on ``pick`` failed: its connection count given back, the outcome told."""
        balancer.release(pick)
        self.balancers.report(
            balancer.upstream, pick, "timeout" if e.status == 504 else "tcp_failure"
        )


def release_pick(balancer: Balancer | None, pick: Pick | None) -> None:
    """Give ``pick`` back to ``balancer`` (its connection count), when both are there."""
    if balancer is not None and pick is not None:
        balancer.release(pick)
