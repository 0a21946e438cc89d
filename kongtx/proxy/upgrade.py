"""An upgraded request (WebSocket, any ``Upgrade``) on the pipeline's general path.

:meth:`kongtx.proxy.pipeline.ProxyPipeline._proxy` hands a ``GET`` with ``Upgrade`` and
``Connection: upgrade`` to :class:`UpgradeProxy`: the handshake is sent on a raw upstream
connection (:mod:`kongtx.proxy.tunnel`), then the client connection is spliced to it and
bytes flow both ways untouched until either side closes.  A balanced upgrade goes to
one pick (no retry: the handshake is the request).
"""

from __future__ import annotations

from kongtx.balancer.balancer import Balancer, Pick
from kongtx.balancer.registry import Balancers
from kongtx.proxy.balanced import release_pick
from kongtx.proxy.context import Downstream, ProxyContext
from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.request import UpstreamRequest
from kongtx.proxy.respond import Responder
from kongtx.proxy.tunnel import open_tunnel
from kongtx.proxy.upstream import UpstreamClient
from kongtx.proxy.upstream_request import build_head, split_url


class UpgradeProxy:
    """Tunnels upgraded requests for one pipeline (its client, responder and upstreams)."""

    def __init__(
        self, client: UpstreamClient, respond: Responder, balancers: Balancers | None
    ) -> None:
        self.client = client
        self.respond = respond
        self.balancers = balancers

    async def serve(
        self,
        ctx: ProxyContext,
        req: UpstreamRequest,
        down: Downstream,
        accept: str | None,
        balancer: Balancer | None = None,
    ) -> None:
        """Send the handshake, then splice raw bytes until either side is gone."""
        pick: Pick | None = None
        try:
            scheme, host, port, target = split_url(req.url, req.origin)
            head = build_head(req.method, target, req.headers, None)
            if balancer is not None:
                pick = balancer.pick(ctx)
                if pick is None:
                    self.respond.send_no_peer(ctx, down)
                    return
            address = (pick.host, pick.port) if pick is not None else None
            tunnel = await open_tunnel(self.client, scheme, host, port, address)
        except ValueError:
            release_pick(balancer, pick)
            self.respond.send_error(ctx, down, 502, accept)
            return
        except UpstreamError as e:
            if pick is not None and balancer is not None and self.balancers is not None:
                kind = "timeout" if e.status == 504 else "tcp_failure"
                self.balancers.report(balancer.upstream, pick, kind)
            release_pick(balancer, pick)
            self.respond.send_error(ctx, down, e.status, accept)
            return
        except BaseException:
            release_pick(balancer, pick)
            raise
        ctx.status = 101
        tunnel.write(head)
        down.splice(tunnel)
        try:
            await tunnel.closed
        finally:
            release_pick(balancer, pick)
