# -*- test-case-name: tests.unit.test_upstream_request -*-
"""Building the upstream request from the matched API (SPEC §3.2).

Pure functions and small value types, no I/O: the pipeline calls them after the
access phase, so whatever plugins changed (headers, query args, Host) is what goes
upstream.  Everything here is decided by SPEC §3.2 and the ``trusted_ips``
difference (SPEC's top table); the reasons for each rule are in the SPEC.  The
headers themselves (:class:`~kongtx.proxy.headers.HeaderList`) are
:mod:`kongtx.proxy.headers`: every side of the proxy keeps them, not only this one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from kongtx.invalidation import chain_key
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.query import encode_query
from kongtx.proxy.upstream_request import Origin, origin_end
from kongtx.store.interface import RowView

if TYPE_CHECKING:
    # kongtx.router builds each API's ApiTarget: only the type is needed here
    from kongtx.router import Match

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ----------------------------------------------------------------------- client IP


class TrustedIps:
    """The ``trusted_ips`` setting: peers whose X-Forwarded-For we believe.

    Kong 0.9 believed X-Forwarded-For from anyone (``set_real_ip_from 0.0.0.0/0``),
    so any client could pick the address ip-restriction and rate limiting saw.  We
    honour it only from listed peers, with nginx's ``real_ip_recursive on``: walk
    the list from the right, skipping trusted addresses; the first untrusted one is
    the client; when every hop is trusted, the left-most address is.
    """

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip()
            if entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (an IP literal) is a trusted peer."""
        if not self._networks:
            return False
        ip = _parse_ip(address)
        if ip is None:
            return False
        return any(ip.version == n.version and ip in n for n in self._networks)

    def client_ip(self, peer: str, forwarded_for: list[str]) -> str:
        """The client address for a connection from ``peer`` with these XFF values."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        hops = [h for h in hops if h]
        current = peer
        for hop in reversed(hops):
            if _parse_ip(hop) is None:
                # nginx stops at an address it cannot parse and keeps the last good one.
                return current
            current = hop
            if not self.trusts(hop):
                return hop
        return current


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# ----------------------------------------------------------------------- URL and Host


def upstream_path(api: RowView, match: Match, uri: str) -> tuple[str, bool]:
    """The full upstream URL without query, and whether the path was stripped.

    ``uri`` is the raw request path (no query string).  strip_request_path applies
    to path matches only (SPEC §3.1.4).  What it needs of the API was read once, when
    the router was built (``match.target``, the :class:`ApiTarget` of ``api``).
    """
    target = match.target
    if target.strip and match.kind == "path":
        request_path = target.request_path
        at = uri.find(request_path)
        rest = uri if at < 0 else uri[:at] + uri[at + len(request_path) :]
        if target.root_upstream and not rest.startswith("/"):
            rest = "/" + rest
        return target.base + rest, at >= 0
    return target.base + uri, False


def upstream_host_header(upstream_url: str) -> str:
    """The Host sent upstream when preserve_host is off (with Kong's ``:443`` quirk)."""
    cut = origin_end(upstream_url)
    return _host_header(upstream_url[: len(upstream_url) if cut < 0 else cut])


def _host_header(origin: str) -> str:
    """:func:`upstream_host_header` of ``scheme://authority``."""
    scheme, _, authority = origin.partition("://")
    hostport = authority.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        end = hostport.find("]")
        has_port = end >= 0 and hostport[end + 1 : end + 2] == ":"
    else:
        has_port = ":" in hostport
    if has_port:
        return hostport
    if scheme.lower() == "https":
        return hostport + ":443"
    return hostport


class ApiTarget:
    """What SPEC §3.2 needs of one API, read from its row once (when the router is built).

    An API's cached row is a read-only mapping whose every ``get`` is an interpreted
    call; the router's index holds one of these per API (``Match.target``) so that a
    proxied request reads plain attributes instead.  Kept small (the router of 10,000
    APIs is in the RSS target): the index holds no other per-API object, the request's
    :class:`kongtx.router.Match` is made per request, and the Host and
    X-Forwarded-Prefix lines are built per request from the strings kept here.
    """

    __slots__ = (
        "api",
        "base",
        "chain_key",
        "host_entry",
        "host_header",
        "origin",
        "preserve_host",
        "request_path",
        "root_upstream",
        "strip",
        "upstream_name",
        "upstream_url",
    )

    def __init__(self, api: RowView) -> None:
        #: the API's cached row (what the router's index holds: :class:`kongtx.router.Match`
        #: is made from this per request)
        self.api: RowView = api
        upstream_url = api.get("upstream_url") or ""
        self.upstream_url: str = upstream_url
        #: upstream_url without its trailing ``/`` (the request path is appended)
        self.base: str = upstream_url[:-1] if upstream_url.endswith("/") else upstream_url
        request_path = api.get("request_path")
        self.request_path: str = request_path if isinstance(request_path, str) else ""
        #: strip_request_path with a request_path (path matches only strip)
        self.strip: bool = bool(api.get("strip_request_path")) and bool(self.request_path)
        # upstream_url split once: its origin (scheme://authority) and its own path
        cut = origin_end(upstream_url)
        origin = upstream_url if cut < 0 else upstream_url[:cut]
        own_path = "" if cut < 0 else upstream_url[cut:]
        for sep in ("?", "#"):
            own_path = own_path.partition(sep)[0]
        #: the upstream_url has no path of its own: a stripped rest gets a leading ``/``
        self.root_upstream: bool = own_path in ("", "/")
        self.preserve_host: bool = bool(api.get("preserve_host"))
        self.host_header: str = _host_header(origin)
        #: its header entry, as HeaderList keeps them (made once, not per request)
        self.host_entry: tuple[str, str, str] = ("host", "Host", self.host_header)
        #: where the client connects (each request's URL starts with it); None when
        #: upstream_url is no http(s) URL: the client then fails each request (502)
        self.origin: Origin | None = None
        try:
            self.origin = Origin(origin)
        except ValueError:
            pass
        #: the host of upstream_url as the balancers name it (kongtx.proxy.balanced)
        self.upstream_name: str | None = None
        #: the cache key of the API's plugin chain (the pipeline's lookup per request)
        self.chain_key: str = chain_key(str(api.get("id")))


_REPLACED: Final = frozenset({"host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"})
#: host matches: X-Forwarded-Host is set (exact) or removed (wildcard)
_REPLACED_WITH_FORWARDED_HOST: Final = _REPLACED | {"x-forwarded-host"}
_REPLACED_WITH_PREFIX: Final = _REPLACED | {"x-forwarded-prefix"}
_REPLACED_WITH_BOTH: Final = _REPLACED_WITH_FORWARDED_HOST | {"x-forwarded-prefix"}
_PROTO_HTTP: Final = ("x-forwarded-proto", "X-Forwarded-Proto", "http")
_PROTO_HTTPS: Final = ("x-forwarded-proto", "X-Forwarded-Proto", "https")


class UpstreamRequest:
    """What goes upstream: method, absolute URL and headers (framing added later)."""

    __slots__ = ("headers", "method", "origin", "stripped", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: HeaderList,
        stripped: bool,
        origin: Origin | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.stripped = stripped
        #: the origin ``url`` starts with (the API's, split once), for the client
        self.origin = origin

    def __repr__(self) -> str:
        return f"UpstreamRequest({self.method} {self.url})"


def build_upstream_request(
    *,
    api: RowView,
    match: Match,
    method: str,
    uri: str,
    query: list[tuple[str, str | None]],
    headers: HeaderList,
    peer_ip: str,
    client_ip: str,
    scheme: str,
    host_override: str | None = None,
    hop_by_hop: bool = False,
    keep_upgrade: bool = False,
    query_string: str | None = None,
) -> UpstreamRequest:
    """Apply SPEC §3.2 to the (plugin-modified) request.

    ``headers`` are the headers as the access phase left them; a copy is returned.
    ``peer_ip`` is the TCP peer, ``client_ip`` the address after ``trusted_ips``.
    ``host_override`` is a Host set by a plugin (request-transformer) and wins.
    With ``hop_by_hop`` the hop-by-hop headers are left out as well, in the same
    pass (:func:`strip_hop_by_hop`, with ``keep_upgrade``).  ``query_string``, when
    given, is ``query`` encoded already (:func:`encoded_query`, :func:`encode_args`).
    """
    target = match.target
    kind = match.kind
    url, stripped = upstream_path(api, match, uri)
    encoded = encode_query(query) if query_string is None else query_string
    if encoded:
        url = f"{url}?{encoded}"

    if host_override is not None:
        host = host_override
    elif target.preserve_host:
        matched_host = match.matched_host
        if kind == "host-exact" and matched_host is not None:
            host = matched_host
        else:
            host = headers.get_lowered("host") or target.host_header
    else:
        host = target.host_header

    source = headers._items
    listed: set[str] | None = None
    if hop_by_hop:
        listed = _connection_listed(source)
    # What is replaced below is dropped; X-Forwarded-For values kept to append to.
    prefixed = stripped and target.request_path
    if kind != "path":
        replaced = _REPLACED_WITH_BOTH if prefixed else _REPLACED_WITH_FORWARDED_HOST
    else:
        replaced = _REPLACED_WITH_PREFIX if prefixed else _REPLACED
    # (lower-case name, name, value) triples, as HeaderList keeps them; items.append,
    # not a bound ``add``: compiled, that is the list primitive, not a generic call
    items: list[tuple[str, str, str]] = []
    incoming = ""
    for entry in source:
        lname = entry[0]
        if listed is not None and (
            lname in HOP_BY_HOP
            or lname.startswith("proxy-")
            or lname in listed
            or (keep_upgrade and (lname == "connection" or lname == "upgrade"))
        ):
            continue
        if lname in replaced:
            if lname == "x-forwarded-for":
                incoming = entry[2] if not incoming else f"{incoming}, {entry[2]}"
            continue
        items.append(entry)
    if keep_upgrade and listed is not None:
        items.append(("connection", "Connection", "upgrade"))
        upgrade = headers.get_lowered("upgrade")
        if upgrade is not None:
            items.append(("upgrade", "Upgrade", upgrade))
    items.append(target.host_entry if host is target.host_header else ("host", "Host", host))
    if kind == "host-exact" and match.matched_host is not None:
        items.append(("x-forwarded-host", "X-Forwarded-Host", match.matched_host))
    if prefixed:
        items.append(("x-forwarded-prefix", "X-Forwarded-Prefix", target.request_path))
    items.append(("x-real-ip", "X-Real-IP", client_ip))
    # The TCP peer is this hop: it is appended whether or not its XFF was believed.
    items.append(
        ("x-forwarded-for", "X-Forwarded-For", f"{incoming}, {peer_ip}" if incoming else peer_ip)
    )
    if scheme == "http":
        items.append(_PROTO_HTTP)
    elif scheme == "https":
        items.append(_PROTO_HTTPS)
    else:
        items.append(("x-forwarded-proto", "X-Forwarded-Proto", scheme))
    return UpstreamRequest(method, url, HeaderList.from_lowered(items), stripped, target.origin)


# ----------------------------------------------------------------------- hop-by-hop

#: Headers that describe one connection, never forwarded (RFC 7230 §6.1).  The
#: framing headers Content-Length and Transfer-Encoding are not here: the upstream
#: client frames the body it sends itself, and must never lose the length.
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "te", "trailer", "trailers", "upgrade", "proxy-connection"}
)


def _connection_listed(items: list[tuple[str, str, str]]) -> set[str]:
    """The names the Connection headers list (lower-case), or an empty set; the
    framing headers and Host are never dropped for being listed."""
    listed: set[str] | None = None
    for entry in items:
        if entry[0] == "connection":
            for token in entry[2].split(","):
                token = token.strip().lower()
                if token and token not in _NEVER_LISTED:
                    if listed is None:
                        listed = set()
                    listed.add(token)
    return _NOTHING_LISTED if listed is None else listed


#: names a Connection header cannot make hop-by-hop
_NEVER_LISTED: Final = frozenset({"content-length", "transfer-encoding", "host"})
#: no name listed (shared, never changed)
_NOTHING_LISTED: Final[set[str]] = set()


def strip_hop_by_hop(headers: HeaderList, keep_upgrade: bool = False) -> HeaderList:
    """Remove hop-by-hop headers: Connection and the names it lists, Keep-Alive,
    Proxy-*, TE, Trailer, Upgrade.  With ``keep_upgrade`` (a WebSocket handshake)
    ``Connection: upgrade`` and ``Upgrade`` pass, since the upstream must see them.

    (:func:`build_upstream_request` does the same with ``hop_by_hop``, in its pass.)
    """
    listed = _connection_listed(headers._items)
    result = HeaderList()
    kept = result._items
    for entry in headers._items:
        lname = entry[0]
        if keep_upgrade and lname in ("connection", "upgrade"):
            continue
        if lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in listed:
            continue
        kept.append(entry)
    if keep_upgrade:
        result.add("Connection", "upgrade")
        upgrade = headers.get("upgrade")
        if upgrade is not None:
            result.add("Upgrade", upgrade)
    return result
