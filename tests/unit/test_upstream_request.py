"""Building the upstream request (SPEC §3.2) and trusted_ips: kongtx.proxy.request."""

from __future__ import annotations

from typing import Any

import pytest

from kongtx.proxy import query as query_module
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.query import encode_args, encode_query, encoded_query, parse_query, query_args
from kongtx.proxy.request import (
    ApiTarget,
    TrustedIps,
    build_upstream_request,
    strip_hop_by_hop,
    upstream_host_header,
    upstream_path,
)
from kongtx.proxy.upstream_request import split_url
from kongtx.router import Match


def api(**kw: Any) -> dict[str, Any]:
    row = {
        "id": "1",
        "name": "a",
        "request_host": None,
        "request_path": None,
        "upstream_url": "http://up.com",
        "strip_request_path": False,
        "preserve_host": False,
    }
    row.update(kw)
    return row


def path_match(row: dict[str, Any]) -> Match:
    return Match(row, "path", None)


def build(
    row: dict[str, Any],
    match: Match,
    uri: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    peer: str = "10.0.0.1",
    client: str | None = None,
    scheme: str = "http",
):  # type: ignore[no-untyped-def]
    return build_upstream_request(
        api=row,
        match=match,
        method="GET",
        uri=uri,
        query=parse_query(query),
        headers=HeaderList(headers or []),
        peer_ip=peer,
        client_ip=client or peer,
        scheme=scheme,
    )


# ------------------------------------------------------------------ URL


@pytest.mark.parametrize(
    ("upstream", "request_path", "uri", "expected"),
    [
        ("http://h", "/mockbin", "/mockbin", "http://h/"),
        ("http://h", "/mockbin", "/mockbin/x", "http://h/x"),
        ("http://h", "/mockbin", "/mockbin/x/", "http://h/x/"),
        ("http://h/some/path/", "/strip", "/strip", "http://h/some/path"),
        ("http://h/some/path/", "/strip", "/strip/", "http://h/some/path/"),
        ("http://h/", "/strip", "/strip", "http://h/"),
    ],
)
def test_strip_request_path(upstream: str, request_path: str, uri: str, expected: str) -> None:
    """strip_request_path removes the request_path, adding "/" only when the upstream has no path."""
    row = api(upstream_url=upstream, request_path=request_path, strip_request_path=True)
    url, stripped = upstream_path(row, path_match(row), uri)
    assert url == expected
    assert stripped


def test_no_strip_appends_full_uri() -> None:
    """Without strip the raw URI is appended to the upstream path (one trailing / removed)."""
    row = api(upstream_url="http://h/some/path", request_path="/p")
    assert upstream_path(row, path_match(row), "/p") == ("http://h/some/path/p", False)
    row = api(upstream_url="http://h/some/path/", request_path="/p")
    assert upstream_path(row, path_match(row), "/p/x") == ("http://h/some/path/p/x", False)


def test_strip_not_applied_on_host_match() -> None:
    """strip_request_path never applies when the Host matched."""
    row = api(request_host="a.com", request_path="/p", strip_request_path=True)
    assert upstream_path(row, Match(row, "host-exact", "a.com"), "/p/x") == (
        "http://up.com/p/x",
        False,
    )


def test_strip_removes_first_occurrence_only() -> None:
    """Only the first literal occurrence of request_path is removed."""
    row = api(request_path="/a", strip_request_path=True)
    assert upstream_path(row, path_match(row), "/a/a/b")[0] == "http://up.com/a/b"


def test_raw_percent_encoding_is_kept() -> None:
    """The path goes upstream with its percent-encoding untouched."""
    row = api(request_path="/p")
    assert upstream_path(row, path_match(row), "/p/a%2Fb%20c")[0] == "http://up.com/p/a%2Fb%20c"


# ------------------------------------------------------------------ query


def test_query_sorted_lower_hex_flags() -> None:
    """Keys sorted, values re-encoded with lower-case hex, bare flags and ``a=`` emitted bare."""
    assert encode_query(parse_query("b=2&a=x/y&flag&c=&a=1")) == "a=x%2fy&a=1&b=2&c&flag"


def test_query_plus_and_percent_decoded_once() -> None:
    """``+`` is a space and %xx decoded once (0.9.9 fixed double-decoding)."""
    assert parse_query("q=a+b%2525") == [("q", "a b%25")]
    assert encode_query(parse_query("q=a+b%2525")) == "q=a%20b%2525"


def test_query_first_100_args_only() -> None:
    """Only the first 100 args survive (OpenResty default)."""
    raw = "&".join(f"k{i:03d}={i}" for i in range(150))
    assert len(parse_query(raw)) == 100
    assert "k100" not in encode_query(parse_query(raw))


def test_query_unreserved_kept() -> None:
    """Unreserved characters are not encoded; others are."""
    assert encode_query([("a-b_c.d~", "x y&z=é")]) == "a-b_c.d~=x%20y%26z%3d%c3%a9"


def test_query_appended_to_url() -> None:
    """The re-encoded query is appended with '?', none when there are no args."""
    row = api(request_path="/p")
    assert build(row, path_match(row), "/p", "z=1&a=2").url == "http://up.com/p?a=2&z=1"
    assert build(row, path_match(row), "/p", "").url == "http://up.com/p"


# ------------------------------------------------------------------ Host


@pytest.mark.parametrize(
    ("upstream", "host"),
    [
        ("http://h.com", "h.com"),
        ("http://h.com:8080/x", "h.com:8080"),
        ("https://h.com", "h.com:443"),
        ("https://h.com:8443", "h.com:8443"),
        ("http://h.com:80", "h.com:80"),
        ("http://u:p@h.com/x", "h.com"),
        ("https://[::1]/x", "[::1]:443"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("http://H.com?q=1", "H.com"),
        ("http://h.com#f", "h.com"),
    ],
)
def test_host_header_without_preserve(upstream: str, host: str) -> None:
    """Host is the upstream host, with an explicit port, plus Kong's :443 quirk for https."""
    assert upstream_host_header(upstream) == host


def test_preserve_host_exact_uses_matched_value() -> None:
    """preserve_host with an exact host match sends the matched value (port stripped)."""
    row = api(request_host="a.com", preserve_host=True)
    req = build(
        row,
        Match(row, "host-exact", "a.com"),
        headers=[("Host", "b.com:99"), ("X-Host-Override", "a.com")],
    )
    assert req.headers.get("host") == "a.com"


def test_preserve_host_otherwise_raw_host() -> None:
    """preserve_host with a wildcard or path match sends the client's raw Host, port kept."""
    row = api(request_host="*.a.com", preserve_host=True)
    req = build(row, Match(row, "host-wildcard", "x.a.com"), headers=[("Host", "x.a.com:8000")])
    assert req.headers.get("host") == "x.a.com:8000"
    row = api(request_path="/p", preserve_host=True)
    req = build(row, path_match(row), "/p", headers=[("Host", "client.com")])
    assert req.headers.get("host") == "client.com"


def test_host_header_replaced_not_duplicated() -> None:
    """The client's Host is replaced by exactly one upstream Host."""
    row = api(request_path="/p")
    req = build(row, path_match(row), "/p", headers=[("Host", "client.com")])
    assert req.headers.get_all("host") == ["up.com"]


# ------------------------------------------------------------------ X-Forwarded-*


def test_forwarded_host_exact_set() -> None:
    """Exact host match: X-Forwarded-Host is the matched host."""
    row = api(request_host="a.com")
    req = build(row, Match(row, "host-exact", "a.com"), headers=[("X-Forwarded-Host", "evil")])
    assert req.headers.get_all("x-forwarded-host") == ["a.com"]


def test_forwarded_host_wildcard_removed() -> None:
    """Wildcard host match: X-Forwarded-Host is removed."""
    row = api(request_host="*.a.com")
    req = build(row, Match(row, "host-wildcard", "x.a.com"), headers=[("X-Forwarded-Host", "evil")])
    assert req.headers.get("x-forwarded-host") is None


def test_forwarded_host_path_untouched() -> None:
    """Path match: X-Forwarded-Host passes untouched."""
    row = api(request_path="/p")
    req = build(row, path_match(row), "/p", headers=[("X-Forwarded-Host", "orig")])
    assert req.headers.get("x-forwarded-host") == "orig"


def test_forwarded_prefix_only_when_stripped() -> None:
    """X-Forwarded-Prefix is the request_path when it was stripped, absent otherwise."""
    row = api(request_path="/p", strip_request_path=True)
    assert build(row, path_match(row), "/p/x").headers.get("x-forwarded-prefix") == "/p"
    row = api(request_path="/p")
    assert build(row, path_match(row), "/p/x").headers.get("x-forwarded-prefix") is None


def test_real_ip_xff_and_proto() -> None:
    """X-Real-IP is the client IP, XFF gets the peer appended, X-Forwarded-Proto the scheme."""
    row = api(request_path="/p")
    req = build(
        row,
        path_match(row),
        "/p",
        headers=[("X-Forwarded-For", "1.1.1.1")],
        peer="10.0.0.1",
        client="1.1.1.1",
        scheme="https",
    )
    assert req.headers.get("x-real-ip") == "1.1.1.1"
    assert req.headers.get_all("x-forwarded-for") == ["1.1.1.1, 10.0.0.1"]
    assert req.headers.get("x-forwarded-proto") == "https"


def test_xff_without_incoming() -> None:
    """Without an incoming XFF, X-Forwarded-For is the peer address."""
    row = api(request_path="/p")
    assert build(row, path_match(row), "/p").headers.get("x-forwarded-for") == "10.0.0.1"


def test_xff_several_lines_joined() -> None:
    """Several incoming XFF lines are joined before the peer is appended."""
    row = api(request_path="/p")
    req = build(
        row,
        path_match(row),
        "/p",
        headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")],
    )
    assert req.headers.get_all("x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 10.0.0.1"]


def test_other_headers_forwarded() -> None:
    """Other headers, X-Host-Override and underscored names included, pass unchanged."""
    row = api(request_path="/p")
    req = build(
        row, path_match(row), "/p", headers=[("X-Host-Override", "o.com"), ("my_header", "v")]
    )
    assert req.headers.get("x-host-override") == "o.com"
    assert req.headers.get("my_header") == "v"


def test_plugin_host_override_wins() -> None:
    """A Host set by a plugin (set_upstream_host) wins over the rules."""
    row = api(request_path="/p", preserve_host=True)
    req = build_upstream_request(
        api=row,
        match=path_match(row),
        method="GET",
        uri="/p",
        query=[],
        headers=HeaderList([("Host", "c")]),
        peer_ip="1.1.1.1",
        client_ip="1.1.1.1",
        scheme="http",
        host_override="plug.in",
    )
    assert req.headers.get("host") == "plug.in"


# ------------------------------------------------------------------ trusted_ips


def test_untrusted_peer_xff_ignored() -> None:
    """Default (trust no one): the client IP is the TCP peer whatever XFF says."""
    assert TrustedIps().client_ip("10.0.0.1", ["1.2.3.4"]) == "10.0.0.1"


def test_trusted_peer_xff_honoured() -> None:
    """From a trusted peer, the right-most untrusted XFF address is the client."""
    t = TrustedIps(["10.0.0.0/8"])
    assert t.client_ip("10.0.0.1", ["1.2.3.4"]) == "1.2.3.4"
    assert t.client_ip("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.1.1.1"]) == "1.2.3.4"


def test_recursive_all_trusted_leftmost() -> None:
    """When every hop is trusted, the left-most address is the client (recursive)."""
    t = TrustedIps(["10.0.0.0/8", "192.168.0.0/16"])
    assert t.client_ip("10.0.0.1", ["10.9.9.9, 192.168.1.1"]) == "10.9.9.9"


def test_spoofed_leftmost_not_believed() -> None:
    """A client-supplied left-most address is not believed past an untrusted hop."""
    t = TrustedIps(["10.0.0.1"])
    assert t.client_ip("10.0.0.1", ["1.1.1.1, 2.2.2.2"]) == "2.2.2.2"


def test_garbage_xff_stops_at_last_good() -> None:
    """An unparsable XFF entry stops the walk at the last good (trusted) address."""
    t = TrustedIps(["10.0.0.0/8"])
    assert t.client_ip("10.0.0.1", ["nonsense, 10.2.2.2"]) == "10.2.2.2"


def test_trusted_ipv6_and_single_ip() -> None:
    """IPv6 networks and bare addresses are accepted as trusted entries."""
    t = TrustedIps(["::1", "fd00::/8"])
    assert t.trusts("::1") and t.trusts("fd00::5") and not t.trusts("10.0.0.1")
    assert t.client_ip("::1", ["2001:db8::1"]) == "2001:db8::1"


# ------------------------------------------------------------------ hop-by-hop


def test_hop_by_hop_stripped_framing_kept() -> None:
    """Connection, names it lists, Keep-Alive, Proxy-*, TE, Trailer, Upgrade go; framing stays."""
    h = HeaderList(
        [
            ("Connection", "keep-alive, X-Private, Content-Length"),
            ("X-Private", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "x"),
            ("Proxy-Connection", "x"),
            ("TE", "trailers"),
            ("Trailer", "X"),
            ("Upgrade", "h2c"),
            ("Content-Length", "3"),
            ("Transfer-Encoding", "chunked"),
            ("X-Keep", "1"),
        ]
    )
    out = strip_hop_by_hop(h)
    assert [n for n, _ in out] == ["Content-Length", "Transfer-Encoding", "X-Keep"]


def test_websocket_keeps_upgrade() -> None:
    """For an upgrade request Connection: upgrade and Upgrade are kept."""
    h = HeaderList([("Connection", "Upgrade"), ("Upgrade", "websocket"), ("X", "1")])
    out = strip_hop_by_hop(h, keep_upgrade=True)
    assert out.get("connection") == "upgrade"
    assert out.get("upgrade") == "websocket"
    assert out.get("x") == "1"


@pytest.mark.parametrize(
    "headers",
    [
        [("Connection", "keep-alive, X-Forwarded-For"), ("X-Forwarded-For", "1.2.3.4")],
        [("Connection", "close"), ("Proxy-Authorization", "x"), ("X-Keep", "1"), ("TE", "t")],
        [("Host", "a.com"), ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")],
        [("Connection", "Host, Content-Length"), ("Content-Length", "3"), ("Host", "h")],
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("X-Real-IP", "evil")],
    ],
)
@pytest.mark.parametrize("keep_upgrade", [False, True])
def test_hop_by_hop_in_the_same_pass(headers: list[tuple[str, str]], keep_upgrade: bool) -> None:
    """``hop_by_hop=True`` builds what strip_hop_by_hop then build_upstream_request built."""
    row = api(request_host="a.com", preserve_host=True)
    match = Match(row, "host-exact", "a.com")
    common: dict[str, Any] = dict(
        api=row,
        match=match,
        method="GET",
        uri="/x",
        query=[],
        peer_ip="10.0.0.1",
        client_ip="10.0.0.1",
        scheme="https",
    )
    two_passes = build_upstream_request(
        headers=strip_hop_by_hop(HeaderList(headers), keep_upgrade=keep_upgrade), **common
    )
    one_pass = build_upstream_request(
        headers=HeaderList(headers), hop_by_hop=True, keep_upgrade=keep_upgrade, **common
    )
    assert one_pass.headers.items() == two_passes.headers.items()
    assert one_pass.url == two_passes.url == "http://up.com/x"


def test_api_target_read_once() -> None:
    """What SPEC §3.2 needs of an API is read from its row into Match.target."""
    row = api(
        upstream_url="https://up.com/base/",
        request_path="/p",
        strip_request_path=True,
        preserve_host=True,
    )
    target = ApiTarget(row)
    assert target.base == "https://up.com/base"
    assert target.strip and target.request_path == "/p" and not target.root_upstream
    assert target.preserve_host and target.host_header == "up.com:443"
    assert target.api is row
    assert ApiTarget(api(request_path="/p", strip_request_path=True)).root_upstream
    assert not ApiTarget(api(strip_request_path=True)).strip  # no request_path: nothing to strip
    assert Match(row, "path", None).target.base == "https://up.com/base"
    origin = target.origin
    assert origin is not None
    assert (origin.scheme, origin.host, origin.port) == ("https", "up.com", 443)
    assert origin.length == len("https://up.com")


@pytest.mark.parametrize(
    ("upstream_url", "root"),
    [
        ("http://h", True),
        ("http://h/", True),
        ("http://h?x=1", True),
        ("http://h/?x=1", True),
        ("http://h/p", False),
        ("http://h/p/", False),
        ("http://[::1]:81", True),
    ],
)
def test_api_target_root_upstream(upstream_url: str, root: bool) -> None:
    """Whether upstream_url has a path of its own (SPEC §3.2 strip_request_path)."""
    assert ApiTarget(api(upstream_url=upstream_url)).root_upstream is root


def test_upstream_request_carries_the_apis_origin() -> None:
    """The client connects where the API's origin (split once) says; the URL starts with it."""
    row = api(upstream_url="http://[::1]:8081/base", request_path="/p", strip_request_path=True)
    match = path_match(row)
    req = build(row, match, uri="/p/x", query="b=1")
    assert req.url == "http://[::1]:8081/base/x?b=1"
    assert req.origin is match.target.origin
    assert split_url(req.url, req.origin) == ("http", "::1", 8081, "/base/x?b=1")
    assert ApiTarget(api(upstream_url="ftp://h")).origin is None  # the client fails it: 502


@pytest.mark.parametrize("raw", ["", "b=2&a=1", "x=%41+b&flag&e=", "a=1&a=0"])
def test_remembered_query_encoding(raw: str) -> None:
    """The remembered encoding of a raw query is what encoding its args gives."""
    assert encoded_query(raw) == encode_query(parse_query(raw))
    assert encoded_query(raw) == encoded_query(raw)  # the second time from memory
    args = query_args(raw)
    assert args == parse_query(raw)
    args.append(("z", "1"))  # a plugin's change never reaches the remembered args
    assert query_args(raw) == parse_query(raw)
    assert encode_args(raw, args) == encode_query(args)
    assert encode_args(raw, query_args(raw)) == encode_query(parse_query(raw))


def test_remembered_queries_bounded() -> None:
    """At most _MAX_QUERIES raw queries are remembered, and none longer than the limit."""
    for i in range(query_module._MAX_QUERIES + 10):
        encoded_query(f"n={i}")
    assert len(query_module._QUERIES) <= query_module._MAX_QUERIES
    long = "a=" + "x" * query_module._MAX_QUERY_LENGTH
    assert encoded_query(long) == long
    assert long not in query_module._QUERIES
