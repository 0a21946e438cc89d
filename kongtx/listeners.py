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

A ``kong reload`` that changes ``nginx_worker_processes`` between 1 and more hands
the proxy sockets over without closing them (kongtx.node_workers): ``sockets``
gives the listening sockets of running roles (the workers adopt duplicates),
``retire`` stops a role accepting without shutting its socket down (the workers
share it) and ``adopt`` serves a role on a socket already listening (the
workers'), through :class:`Adopting`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList

from kongtx.config import Address, Config
from kongtx.log import logger

log = logger("kongtx.listeners")

#: a role's service for a configuration (not started); a proxy role may be given a
#: listening socket to adopt (a third argument) instead of binding its address
Build = Callable[..., IService]


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
                await maybe_await(current[1].disownServiceParent())
        for role in [r for r in self._running if r not in wanted]:
            _, service = self._running.pop(role)
            moved.append(role)
            await maybe_await(service.disownServiceParent())
        return moved

    def sockets(self, roles: set[str]) -> dict[str, tuple[Address, socket.socket]]:
        """The listening socket of each running role of ``roles`` (for others to adopt)."""
        found = {}
        for role, (address, service) in self._running.items():
            sock = getattr(_port(service), "socket", None)
            if role in roles and isinstance(sock, socket.socket):
                found[role] = (address, sock)
        return found

    async def retire(self, roles: set[str]) -> list[IService]:
        """Stop serving ``roles`` (they are served elsewhere from now: ``skip``).

        The listening sockets are closed in this process only, never shut down: the
        processes that adopted them keep accepting on them.  Returns the services
        (their factories drain what is in flight).
        """
        self.skip |= roles
        retired = [self._running.pop(r)[1] for r in list(self._running) if r in roles]
        for service in retired:
            port = _port(service)
            if port is not None:
                port._shouldShutdown = False
            await maybe_await(service.disownServiceParent())
        return retired

    async def adopt(
        self, sockets: Mapping[str, tuple[Address, socket.socket]], config: Config
    ) -> None:
        """Serve each role on its socket, already listening (another owner keeps it open).

        The roles are no longer skipped; a role that fails to build raises, and the
        roles adopted before it are let go again (the sockets' owner still serves them).
        """
        adopted: list[str] = []
        try:
            for role, (address, sock) in sockets.items():
                self._running[role] = (address, await self._bind(role, config, sock))
                adopted.append(role)
        except Exception:
            await self.retire(set(adopted))
            raise
        self.skip -= set(sockets)

    async def stop(self) -> None:
        """Close every listener (``kong quit`` drains what is in flight afterwards)."""
        running, self._running = self._running, {}
        await DeferredList(
            [
                Deferred.fromCoroutine(maybe_await(s.disownServiceParent()))
                for _, s in running.values()
            ]
        )

    async def _bind(self, role: str, config: Config, sock: socket.socket | None = None) -> IService:
        """Start a role's service; a socket that cannot be bound raises here."""
        service = self._build(role, config) if sock is None else self._build(role, config, sock)
        if isinstance(service, StreamServerEndpointService):
            # TCP binds fail synchronously: raise instead of logging and carrying on
            service._raiseSynchronously = True
        try:
            service.setServiceParent(self._parent)
        except Exception:
            if service.parent is not None:
                await maybe_await(service.disownServiceParent())
            raise
        return service


class Adopting:
    """A reactor whose ``listenTCP`` serves ``sock`` (already listening) instead of binding.

    Given to the usual endpoint (``TCP4ServerEndpoint``...), so a role's service is
    built the same way whether it binds or adopts.  ``adoptStreamPort`` listens on
    a duplicate of the descriptor (the caller keeps ``sock``) and never shuts the
    shared socket down when it stops.
    """

    def __init__(self, reactor: Any, sock: socket.socket) -> None:
        self._reactor = reactor
        self._sock = sock

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        return self._reactor.adoptStreamPort(self._sock.fileno(), self._sock.family, factory)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def _port(service: IService) -> Any:
    """The listening port of a started ``StreamServerEndpointService`` (None if not listening)."""
    waiting = getattr(service, "_waitingForPort", None)
    return getattr(waiting, "result", None)


async def maybe_await(result: Any) -> Any:
    """Await ``result`` if it is a Deferred (``disownServiceParent`` may return one)."""
    if isinstance(result, Deferred):
        return await result
    return result
