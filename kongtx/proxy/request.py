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
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote_to_bytes, urlsplit

from kongtx.proxy.headers import HeaderList
from kongtx.router import Match
from kongtx.store.interface import RowView

#: OpenResty's default for ngx.req.get_uri_args(): later args are dropped.
MAX_ARGS = 100

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


# ----------------------------------------------------------------------- query args


def parse_query(raw: str, limit: int = MAX_ARGS) -> list[tuple[str, str | None]]:
    """Decode a raw query string like ``ngx.req.get_uri_args``.

    ``+`` is a space, ``%xx`` is decoded once, a key without ``=`` is a bare flag
    (value ``None``); empty pieces are skipped; only the first ``limit`` args count.
    """
    args: list[tuple[str, str | None]] = []
    if not raw:
        return args
    for piece in raw.split("&"):
        if not piece:
            continue
        if len(args) >= limit:
            break
        if "=" in piece:
            key, value = piece.split("=", 1)
            args.append((_unescape(key), _unescape(value)))
        else:
            args.append((_unescape(piece), None))
    return args


def _unescape(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text  # nothing to decode (the common case): the same text
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "surrogateescape")


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: text made of unreserved characters only: left as it is (checked in C)
_ALL_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*\Z")


def escape_uri_component(text: str) -> str:
    """Percent-encode everything but unreserved characters, with lower-case hex."""
    if _ALL_UNRESERVED.match(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    if all(b in _UNRESERVED for b in data):
        return text
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02x}" for b in data)


def _arg_key(arg: tuple[str, str | None]) -> str:
    return arg[0]


def encode_query(args: list[tuple[str, str | None]]) -> str:
    """Re-encode args the way Kong 0.9 sent them upstream (SPEC §3.2, "Query string").

    Keys sorted alphabetically (stable, so repeated keys keep their order); a bare
    flag or an empty value is emitted as the bare key (``a=`` becomes ``a``).
    """
    if not args:
        return ""
    parts: list[str] = []
    for key, value in sorted(args[:MAX_ARGS], key=_arg_key):
        k = escape_uri_component(key)
        if value is None or value == "":
            parts.append(k)
        else:
            parts.append(f"{k}={escape_uri_component(value)}")
    return "&".join(parts)


# ----------------------------------------------------------------------- URL and Host


@lru_cache(maxsize=4096)
def _split_upstream(upstream_url: str) -> tuple[str, str, str]:
    """``(scheme, netloc, path)`` of an upstream_url, as written."""
    parts = urlsplit(upstream_url)
    return parts.scheme.lower(), parts.netloc, parts.path


def upstream_path(api: RowView, match: Match, uri: str) -> tuple[str, bool]:
    """The full upstream URL without query, and whether the path was stripped.

    ``uri`` is the raw request path (no query string).  strip_request_path applies
    to path matches only (SPEC §3.1.4).
    """
    upstream_url: str = api["upstream_url"]
    base = upstream_url[:-1] if upstream_url.endswith("/") else upstream_url
    request_path = api.get("request_path")
    if match.kind == "path" and api.get("strip_request_path") and request_path:
        at = uri.find(request_path)
        rest = uri if at < 0 else uri[:at] + uri[at + len(request_path) :]
        if not rest.startswith("/"):
            _, _, own_path = _split_upstream(upstream_url)
            if own_path in ("", "/"):
                rest = "/" + rest
        return base + rest, at >= 0
    return base + uri, False


@lru_cache(maxsize=4096)
def upstream_host_header(upstream_url: str) -> str:
    """The Host sent upstream when preserve_host is off (with Kong's ``:443`` quirk)."""
    scheme, netloc, _ = _split_upstream(upstream_url)
    hostport = netloc.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        end = hostport.find("]")
        has_port = end >= 0 and hostport[end + 1 : end + 2] == ":"
    else:
        has_port = ":" in hostport
    if has_port:
        return hostport
    if scheme == "https":
        return hostport + ":443"
    return hostport


def host_and_port(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` to connect to for an upstream URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port


_REPLACED = frozenset({"host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"})
#: host matches: X-Forwarded-Host is set (exact) or removed (wildcard)
_REPLACED_WITH_FORWARDED_HOST = _REPLACED | {"x-forwarded-host"}


class UpstreamRequest:
    """What goes upstream: method, absolute URL and headers (framing added later)."""

    __slots__ = ("headers", "method", "stripped", "url")

    def __init__(self, method: str, url: str, headers: HeaderList, stripped: bool) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.stripped = stripped

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
) -> UpstreamRequest:
    """Apply SPEC §3.2 to the (plugin-modified) request.

    ``headers`` are the headers as the access phase left them; a copy is returned.
    ``peer_ip`` is the TCP peer, ``client_ip`` the address after ``trusted_ips``.
    ``host_override`` is a Host set by a plugin (request-transformer) and wins.
    """
    url, stripped = upstream_path(api, match, uri)
    encoded = encode_query(query)
    if encoded:
        url = f"{url}?{encoded}"

    if host_override is not None:
        host = host_override
    elif api.get("preserve_host"):
        if match.kind == "host-exact" and match.matched_host is not None:
            host = match.matched_host
        else:
            host = headers.get("host") or upstream_host_header(api["upstream_url"])
    else:
        host = upstream_host_header(api["upstream_url"])
    incoming = ", ".join(headers.get_all("x-forwarded-for"))

    # One pass drops what is replaced below; then the new values are appended.
    replaced = _REPLACED_WITH_FORWARDED_HOST if match.kind != "path" else _REPLACED
    if stripped and api.get("request_path"):
        replaced = replaced | {"x-forwarded-prefix"}
    items = [e for e in headers._items if e[0] not in replaced]
    add = items.append  # (lower-case name, name, value) triples, as HeaderList keeps them
    add(("host", "Host", host))
    if match.kind == "host-exact" and match.matched_host is not None:
        add(("x-forwarded-host", "X-Forwarded-Host", match.matched_host))
    if stripped and api.get("request_path"):
        add(("x-forwarded-prefix", "X-Forwarded-Prefix", api["request_path"]))
    add(("x-real-ip", "X-Real-IP", client_ip))
    # The TCP peer is this hop: it is appended whether or not its XFF was believed.
    add(("x-forwarded-for", "X-Forwarded-For", f"{incoming}, {peer_ip}" if incoming else peer_ip))
    add(("x-forwarded-proto", "X-Forwarded-Proto", scheme))
    return UpstreamRequest(method, url, HeaderList.from_lowered(items), stripped)


# ----------------------------------------------------------------------- hop-by-hop

#: Headers that describe one connection, never forwarded (RFC 7230 §6.1).  The
#: framing headers Content-Length and Transfer-Encoding are not here: the upstream
#: client frames the body it sends itself, and must never lose the length.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "trailers", "upgrade", "proxy-connection"}
)


def strip_hop_by_hop(headers: HeaderList, keep_upgrade: bool = False) -> HeaderList:
    """Remove hop-by-hop headers: Connection and the names it lists, Keep-Alive,
    Proxy-*, TE, Trailer, Upgrade.  With ``keep_upgrade`` (a WebSocket handshake)
    ``Connection: upgrade`` and ``Upgrade`` pass, since the upstream must see them.
    """
    listed: set[str] = set()
    for value in headers.get_all("connection"):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                listed.add(token)
    listed -= {"content-length", "transfer-encoding", "host"}
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
