"""The proxy's listeners and the TLS hooks wiring (kongtx.proxy.service)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from kongtx.cache import Cache
from kongtx.clock import Clock
from kongtx.config import Config
from kongtx.proxy.fast import FastProxyFactory
from kongtx.proxy.http import ProxySite
from kongtx.proxy.pipeline import RouterSource
from kongtx.proxy.service import certificate_hook, make_proxy_services, sni_warmer
from kongtx.router import Router


class DAO:
    def __init__(self, apis: list[dict[str, Any]]) -> None:
        self.apis = apis

    async def find_all(self, collection: str, filters: Any) -> list[dict[str, Any]]:
        return list(self.apis) if collection == "apis" else []


class Chain:
    def __init__(self, pair: tuple[bytes, bytes] | None) -> None:
        self.pair = pair

    def certificate(self, sni: str) -> tuple[bytes, bytes] | None:
        return self.pair


class Runtime:
    def __init__(self) -> None:
        self.cached: dict[str, Chain] = {}
        self.loads: list[str] = []
        self.pending: dict[str, Deferred[Chain]] = {}

    def cached_chain(self, api: dict[str, Any]) -> Chain | None:
        return self.cached.get(api["id"])

    async def chain_for(self, api: dict[str, Any]) -> Chain:
        self.loads.append(api["id"])
        d: Deferred[Chain] = Deferred()
        self.pending[api["id"]] = d
        chain = await d
        self.cached[api["id"]] = chain
        return chain


API = {"id": "a1", "request_host": "sni.test", "request_path": None, "upstream_url": "http://u"}
WILD = {"id": "a2", "request_host": "*.wild.test", "request_path": None, "upstream_url": "http://u"}


def routers(loaded: bool) -> RouterSource:
    clock = Clock(MemoryReactorClock())
    cache = Cache(clock)
    source = RouterSource(cache, DAO([API, WILD]))
    if loaded:
        cache.set("ALL_APIS_BY_DIC", Router.build([API, WILD]))
    return source


def test_hook_serves_the_chains_certificate() -> None:
    """An exact request_host with a cached chain: the chain's certificate; others: default."""
    runtime = Runtime()
    runtime.cached["a1"] = Chain((b"cert", b"key"))
    hook = certificate_hook(routers(True), runtime)  # type: ignore[arg-type]
    assert hook("SNI.test") == (b"cert", b"key")
    assert hook("x.wild.test") is None  # Kong: no wildcard SNI
    assert hook("other.test") is None


def test_hook_miss_starts_loading() -> None:
    """With the chain not cached, the default cert is served and the chain starts loading."""
    runtime = Runtime()
    hook = certificate_hook(routers(True), runtime)  # type: ignore[arg-type]
    assert hook("sni.test") is None
    assert runtime.loads == ["a1"]


def test_warmer_waits_for_cold_names_only() -> None:
    """The warm-up waits for the router and the chain when cold; warm or unknown names go on."""
    runtime = Runtime()
    warm = sni_warmer(routers(False), runtime)  # type: ignore[arg-type]
    pending = warm("sni.test")
    assert pending is not None and not pending.called
    runtime.pending["a1"].callback(Chain(None))
    assert pending.called
    warmed = sni_warmer(routers(True), runtime)  # type: ignore[arg-type]
    assert warmed("sni.test") is None  # chain now cached
    assert warmed("nobody.test") is None
    assert warmed("x.wild.test") is None


@pytest.mark.parametrize(
    ("frontend", "factory_type"), [("fast", FastProxyFactory), ("web", ProxySite)]
)
def test_make_proxy_services(tmp_path: Path, frontend: str, factory_type: type) -> None:
    """Two listeners (HTTP and TLS) of the chosen front-end, default certificate generated; one with ssl off."""
    reactor = MemoryReactorClock()
    clock = Clock(reactor)
    config = Config(prefix=str(tmp_path), proxy_frontend=frontend)
    services = make_proxy_services(config, DAO([]), Cache(clock), None, clock, reactor)
    assert len(services) == 2
    assert all(isinstance(getattr(s, "factory", None), factory_type) for s in services)
    assert os.path.exists(tmp_path / "ssl" / "kong-default.crt")
    plain = dataclasses.replace(config, ssl=False)
    assert len(make_proxy_services(plain, DAO([]), Cache(clock), None, clock, reactor)) == 1
