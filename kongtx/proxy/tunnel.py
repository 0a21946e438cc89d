"""Raw upstream connections for upgraded requests (WebSocket), spliced to the client."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure

from kongtx.proxy.errors import connect_error
from kongtx.proxy.upstream import UpstreamClient


class Tunnel(TxProtocol):
    """A raw upstream connection for an upgraded request (WebSocket).

    After the handshake is written, bytes flow both ways untouched: whatever the
    upstream answers (101 or not) goes to the client as is.  ``closed`` fires when
    either side is gone.
    """

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self._peer_write: Callable[[bytes], None] | None = None
        self._peer_close: Callable[[], None] | None = None
        self._pending: list[bytes] = []

    def attach(self, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        """Connect the client side: upstream bytes go to ``write``."""
        self._peer_write = write
        self._peer_close = close
        pending, self._pending = self._pending, []
        for data in pending:
            write(data)
        if self.closed.called:
            close()

    def write(self, data: bytes) -> None:
        """Bytes from the client to the upstream."""
        if self.transport is not None:
            self.transport.write(data)

    def lose(self) -> None:
        """The client went away."""
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._peer_write is None:
            self._pending.append(data)
        else:
            self._peer_write(data)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        if self._peer_close is not None:
            self._peer_close()
        if not self.closed.called:
            self.closed.callback(None)


async def open_tunnel(
    client: UpstreamClient,
    scheme: str,
    host: str,
    port: int,
    address: tuple[str, int] | None = None,
) -> Tunnel:
    """Connect a :class:`Tunnel` to an upstream (connect timeout, 502/504 mapping).

    ``address``: a balanced peer's ``(ip, port)`` to connect to instead (TLS still
    names ``host``).
    """
    from twisted.internet.protocol import Factory

    if address is None:
        endpoint = client.endpoint_for(scheme.encode("ascii"), host.encode("idna"), port)
    else:
        endpoint = client._endpoint((scheme, address[0], address[1], host))
    try:
        proto = await endpoint.connect(Factory.forProtocol(Tunnel))
    except Exception as exc:
        raise connect_error(exc) from exc
    assert isinstance(proto, Tunnel)
    return proto
