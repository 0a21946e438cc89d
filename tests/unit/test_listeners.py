"""NodeListeners: a reload moves only the roles whose address changed, new before old."""

from __future__ import annotations

import dataclasses

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred

from kongtx.config import Address, Config
from kongtx.listeners import NodeListeners, addresses


class FakeListener(Service):
    def __init__(self, role: str, address: Address, events: list[str], busy: set[Address]) -> None:
        self.role, self.address, self.events, self.busy = role, address, events, busy

    def startService(self) -> None:
        if self.address in self.busy:
            raise OSError(f"{self.address.port} is busy")
        super().startService()
        self.events.append(f"bind {self.role} {self.address.port}")

    def stopService(self) -> None:
        if self.running:
            self.events.append(f"close {self.role} {self.address.port}")
        super().stopService()


def config(**changes: object) -> Config:
    base = dataclasses.replace(
        Config(),
        admin_listen=Address("127.0.0.1", 1001),
        proxy_listen=Address("127.0.0.1", 1002),
        proxy_listen_ssl=Address("127.0.0.1", 1003),
        ssl=False,
        status_listen=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def setup() -> tuple[NodeListeners, list[str], set[Address]]:
    events: list[str] = []
    busy: set[Address] = set()
    parent = MultiService()
    parent.startService()

    def build(role: str, cfg: Config) -> Service:
        return FakeListener(role, addresses(cfg)[role], events, busy)

    return NodeListeners(parent, build), events, busy


def run(d: object) -> object:
    result: list[object] = []
    Deferred.fromCoroutine(d).addBoth(result.append)  # type: ignore[arg-type]
    assert result, "the fake listeners never wait"
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()  # type: ignore[union-attr]
    return result[0]


def test_roles_follow_the_configuration() -> None:
    assert set(addresses(config())) == {"admin", "proxy"}
    assert set(addresses(config(ssl=True, status_listen=Address("127.0.0.1", 1004)))) == {
        "admin",
        "proxy",
        "proxy_ssl",
        "status",
    }


def test_only_changed_roles_move_new_bound_before_old_closed() -> None:
    listeners, events, _ = setup()
    run(listeners.start(config()))
    assert events == ["bind admin 1001", "bind proxy 1002"]
    events.clear()
    moved = run(listeners.apply(config(admin_listen=Address("127.0.0.1", 2001))))
    assert moved == ["admin"]
    assert events == ["bind admin 2001", "close admin 1001"]  # the proxy is untouched
    events.clear()
    moved = run(listeners.apply(config(admin_listen=Address("127.0.0.1", 2001), ssl=True)))
    assert (moved, events) == (["proxy_ssl"], ["bind proxy_ssl 1003"])
    events.clear()
    moved = run(listeners.apply(config(admin_listen=Address("127.0.0.1", 2001))))
    assert (moved, events) == (["proxy_ssl"], ["close proxy_ssl 1003"])
    assert len(listeners.services()) == 2


def test_a_new_address_that_cannot_be_bound_keeps_the_old_listener() -> None:
    listeners, events, busy = setup()
    run(listeners.start(config()))
    events.clear()
    busy.add(Address("127.0.0.1", 2002))
    moved = run(listeners.apply(config(proxy_listen=Address("127.0.0.1", 2002))))
    assert moved == [] and events == []
    assert [s.address.port for s in listeners.services()] == [1001, 1002]  # type: ignore[attr-defined]
    run(listeners.stop())
    assert sorted(events) == ["close admin 1001", "close proxy 1002"]
    assert listeners.services() == []
