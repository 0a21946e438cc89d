# -*- test-case-name: tests.unit.test_listeners -*-
"""A node's listening sockets, one per role, and how a reload changes them.

Why by role: ``kong reload`` may change one address (say ``admin_listen``) and
nothing else.  Rebuilding every listener then would try to bind the proxy's
port while the old proxy listener still holds it, fail, and leave the node
without a proxy once the old one is let go.  Here only the roles whose address
changed are touched, and for those the new socket is bound *before* the old one
is closed; a new address that cannot be bound is logged and the old listener
keeps serving.  Settings that do not need a new socket (timeouts, trusted IPs,
certificates...) are applied in place by the node.

Roles: ``admin``, ``proxy``, ``proxy_ssl`` (only when ``ssl`` is on) and
``status`` (only when ``status_listen`` is set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList

from kongtx.config import Address, Config
from kongtx.log import logger

log = logger("kongtx.listeners")

#: a role's service for a configuration (not started)
Build = Callable[[str, Config], IService]


def addresses(config: Config) -> dict[str, Address]:
    """The address of every role the configuration asks for."""
    found = {"admin": config.admin_listen, "proxy": config.proxy_listen}
    if config.ssl:
        found["proxy_ssl"] = config.proxy_listen_ssl
    if config.status_listen is not None:
        found["status"] = config.status_listen
    return found


def bind_failed(role: str, address: Address, error: Exception) -> None:
    """Log a reload's new address that could not be bound (the old listener stays)."""
    log.error(
        "reload: could not listen on {address} for {role}: {error}; keeping the previous listener",
        address=f"{address.host}:{address.port}",
        role=role,
        error=error,
    )


class NodeListeners:
    """The running listener of each role, children of the node's service tree."""

    def __init__(self, parent: MultiService, build: Build) -> None:
        self._parent = parent
        self._build = build
        self._running: dict[str, tuple[Address, IService]] = {}
        #: roles served elsewhere (the proxy roles, when worker processes serve them)
        self.skip: set[str] = set()

    def _addresses(self, config: Config) -> dict[str, Address]:
        return {r: a for r, a in addresses(config).items() if r not in self.skip}

    def services(self) -> list[IService]:
        """Every running listener service."""
        return [service for _, service in self._running.values()]

    async def start(self, config: Config) -> None:
        """Bind every role of ``config``."""
        for role, address in self._addresses(config).items():
            self._running[role] = (address, await self._bind(role, config))

    async def apply(self, config: Config) -> list[str]:
        """Move the roles whose address changed; returns the roles that moved.

        A role whose new address cannot be bound keeps its old listener (and is
        not in the result); a role no longer configured is closed.
        """
        wanted = self._addresses(config)
        moved: list[str] = []
        for role, address in wanted.items():
            current = self._running.get(role)
            if current is not None and current[0] == address:
                continue
            try:
                service = await self._bind(role, config)
            except Exception as e:
                bind_failed(role, address, e)
                continue
            self._running[role] = (address, service)
            moved.append(role)
            if current is not None:
                await _maybe(current[1].disownServiceParent())
        for role in [r for r in self._running if r not in wanted]:
            _, service = self._running.pop(role)
            moved.append(role)
            await _maybe(service.disownServiceParent())
        return moved

    async def stop(self) -> None:
        """Close every listener (``kong quit`` drains what is in flight afterwards)."""
        running, self._running = self._running, {}
        await DeferredList(
            [Deferred.fromCoroutine(_maybe(s.disownServiceParent())) for _, s in running.values()]
        )

    async def _bind(self, role: str, config: Config) -> IService:
        """Start a role's service; a socket that cannot be bound raises here."""
        service = self._build(role, config)
        if isinstance(service, StreamServerEndpointService):
            # TCP binds fail synchronously: raise instead of logging and carrying on
            service._raiseSynchronously = True
        try:
            service.setServiceParent(self._parent)
        except Exception:
            if service.parent is not None:
                await _maybe(service.disownServiceParent())
            raise
        return service


async def _maybe(result: Any) -> Any:
    if isinstance(result, Deferred):
        return await result
    return result
