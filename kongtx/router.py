# -*- test-case-name: tests.unit.test_router -*-
"""API resolution: which API a request is for (SPEC §3.1).

Kong 0.9 rebuilt one table of every API (``ALL_APIS_BY_DIC``) and scanned its
wildcard and path arrays per request.  We keep its answers and make the cost flat
as APIs grow, because the router runs on every proxied request:

* exact hosts: one dict lookup per Host value;
* wildcard hosts (``*.example.org`` / ``example.*``, ``*`` = one or more chars):
  indexed by the literal suffix / prefix; a host is split at each ``.`` and each
  piece is one dict lookup, so the cost depends on the host's labels, not on the
  number of APIs; among several matching wildcards the first in datastore order
  wins, as in Kong;
* paths: Kong takes the first API, in request_paths sorted descending by plain
  string comparison, whose ``request_path + "/"`` is a prefix of the URI + ``/``.
  Two matching paths are always segment prefixes of one another, so "first in
  descending order" is "the greatest matching path".  Literal paths are found by one
  dict lookup per URI segment.  Kong used the path as a regex fragment, so a ``.``
  matches any character; paths containing ``.`` are kept in buckets keyed by their
  literal text before the first ``.`` and checked with the same regex Kong used.

Hosts are compared lower-cased (a deliberate difference from Kong 0.9: RFC 7230
hosts are case-insensitive).  Paths stay case-sensitive and raw (no decoding).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Literal

from kongtx.proxy.request import ApiTarget
from kongtx.store.interface import RowView
from kongtx.store.rows import freeze

MatchKind = Literal["host-exact", "host-wildcard", "path"]

#: The node-cache key the built router lives under (SPEC §7.4); an ``apis`` change
#: invalidates it, and the next request rebuilds the router from the datastore.
CACHE_KEY = "ALL_APIS_BY_DIC"


class Match:
    """The API a request resolved to, and how (never changed once built).

    ``matched_host`` is the Host (or X-Host-Override) value that matched, port cut,
    as the client wrote it; ``None`` for path matches.  ``target`` is what SPEC §3.2
    needs of the API, read from its row once: the router's index holds it (one small
    object per API, no prebuilt matches: the index of 10,000 APIs is in the worker's
    RSS target), and a match is made per request from it.
    """

    __slots__ = ("api", "kind", "matched_host", "target")

    def __init__(
        self,
        api: RowView,
        kind: MatchKind,
        matched_host: str | None,
        target: ApiTarget | None = None,
    ) -> None:
        self.api = api
        self.kind: MatchKind = kind
        self.matched_host = matched_host
        self.target: ApiTarget = ApiTarget(api) if target is None else target

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return (
            self.api == other.api
            and self.kind == other.kind
            and self.matched_host == other.matched_host
        )

    def __hash__(self) -> int:
        return hash((id(self.api), self.kind, self.matched_host))

    def __repr__(self) -> str:
        return f"Match(api={self.api!r}, kind={self.kind!r}, matched_host={self.matched_host!r})"


def cut_port(value: str) -> str:
    """A Host header value without its port (Kong cuts at the first ``:``)."""
    i = value.find(":")
    return value if i < 0 else value[:i]


class Router:
    """An immutable index of every API, built once per ``apis`` change."""

    __slots__ = (
        "_dotted",
        "_dotted_lengths",
        "_exact",
        "_paths",
        "_prefix_wild",
        "_suffix_wild",
        "cache_size",
    )

    def __init__(self) -> None:
        # Each API's ApiTarget (its row read once) is built with the index.
        self._exact: dict[str, ApiTarget] = {}
        # "*.example.org" -> suffix "example.org"; "example.*" -> prefix "example".
        self._suffix_wild: dict[str, tuple[int, ApiTarget]] = {}
        self._prefix_wild: dict[str, tuple[int, ApiTarget]] = {}
        self._paths: dict[str, ApiTarget] = {}
        # literal text before the first "." -> [(compiled regex, request_path, target)]
        self._dotted: dict[str, list[tuple[re.Pattern[str], str, ApiTarget]]] = {}
        self._dotted_lengths: tuple[int, ...] = ()
        #: weight for the node cache's memory bound (kongtx.cache.estimate_size)
        self.cache_size = 0

    @classmethod
    def build(cls, apis: Iterable[RowView]) -> Router:
        """Index ``apis`` (in datastore order, which breaks ties between wildcards)."""
        router = cls()
        size = 256
        for order, row in enumerate(apis):
            size += 768
            # read-only and compact, as the node cache keeps rows (kongtx.store.rows)
            api = freeze(row)
            target = ApiTarget(api)
            host = api.get("request_host")
            if isinstance(host, str) and host.strip():
                key = host.strip().lower()
                # the row's own string when already lower-case: one string, not two
                router._add_host(host if key == host else key, order, target)
            path = api.get("request_path")
            if isinstance(path, str) and path.strip():
                router._add_path(path.strip(), target)
        router._dotted_lengths = tuple(sorted({len(k) for k in router._dotted}))
        router.cache_size = size
        return router

    def _add_host(self, host: str, order: int, target: ApiTarget) -> None:
        if host.startswith("*."):
            self._suffix_wild.setdefault(host[2:], (order, target))
        elif host.endswith(".*"):
            self._prefix_wild.setdefault(host[:-2], (order, target))
        elif "*" not in host:
            self._exact.setdefault(host, target)

    def _add_path(self, path: str, target: ApiTarget) -> None:
        if "." not in path:
            self._paths.setdefault(path, target)
            return
        literal = path[: path.index(".")]
        # Kong: ngx.re.find(uri .. "/", "^" .. request_path .. "/"); "." stays magic.
        pattern = re.compile(re.escape(path).replace(r"\.", ".") + "/")
        self._dotted.setdefault(literal, []).append((pattern, path, target))

    # ------------------------------------------------------------------ matching

    def match(self, host_values: list[str], path: str) -> Match | None:
        """Resolve a request: host pass over every value, then the path pass.

        ``host_values`` are every ``Host`` value then every ``X-Host-Override``
        value, in order, as received (ports are cut here).  ``path`` is the raw
        request URI without its query string.
        """
        for raw in host_values:
            host = cut_port(raw)
            key = host.lower()
            exact = self._exact.get(key)
            if exact is not None:
                return Match(exact.api, "host-exact", host, exact)
            wild = self._match_wildcard(key)
            if wild is not None:
                return Match(wild.api, "host-wildcard", host, wild)
        found = self._match_path(path)
        return None if found is None else Match(found.api, "path", None, found)

    def match_host(self, host: str) -> tuple[RowView, MatchKind] | None:
        """The API whose request_host is ``host`` (exact first, then wildcards)."""
        key = host.lower()
        exact = self._exact.get(key)
        if exact is not None:
            return exact.api, "host-exact"
        wild = self._match_wildcard(key)
        return None if wild is None else (wild.api, "host-wildcard")

    def _match_wildcard(self, key: str) -> ApiTarget | None:
        """The API of the wildcard request_host matching ``key`` (lower-case), the
        first created when several do."""
        if not self._suffix_wild and not self._prefix_wild:
            return None
        best: tuple[int, ApiTarget] | None = None
        i = key.find(".")
        while i >= 0:
            # "*.<suffix>": at least one char before the dot.
            if i > 0:
                hit = self._suffix_wild.get(key[i + 1 :])
                if hit is not None and (best is None or hit[0] < best[0]):
                    best = hit
            # "<prefix>.*": at least one char after the dot.
            if i + 1 < len(key):
                hit = self._prefix_wild.get(key[:i])
                if hit is not None and (best is None or hit[0] < best[0]):
                    best = hit
            i = key.find(".", i + 1)
        return None if best is None else best[1]

    def match_path(self, path: str) -> RowView | None:
        """The API with the greatest request_path that is a segment prefix of ``path``."""
        found = self._match_path(path)
        return None if found is None else found.api

    def _match_path(self, path: str) -> ApiTarget | None:
        """:meth:`match_path`'s API, as the index holds it."""
        uri = path if path.endswith("/") else path + "/"
        best_path: str | None = None
        best: ApiTarget | None = None
        paths = self._paths
        if paths:
            i = uri.find("/", 1)
            while i > 0:
                candidate = uri[:i]
                found = paths.get(candidate)
                if found is not None and (best_path is None or candidate > best_path):
                    best_path, best = candidate, found
                i = uri.find("/", i + 1)
            if best is None:
                best = paths.get("/")
                if best is not None:
                    best_path = "/"
        for length in self._dotted_lengths:
            if length > len(uri):
                break
            for pattern, rp, found in self._dotted.get(uri[:length], ()):
                if pattern.match(uri) and (best_path is None or rp > best_path):
                    best_path, best = rp, found
        return best

    def __len__(self) -> int:
        hosts = len(self._exact) + len(self._suffix_wild) + len(self._prefix_wild)
        return hosts + len(self._paths) + sum(len(v) for v in self._dotted.values())


def not_found_body(host_values: list[str], path: str) -> bytes:
    """The 404 body when no API matched (SPEC §3.1.5).

    Kong's JSON encoder writes an empty Lua table as ``{}``, so an empty list of
    host values serialises as an object, not ``[]``.
    """
    hosts: list[str] | dict[str, str] = [cut_port(v) for v in host_values] or {}
    body = {
        "message": "API not found with these values",
        "request_host": hosts,
        "request_path": path,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
