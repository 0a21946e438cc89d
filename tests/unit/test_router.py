"""API resolution (SPEC §3.1): kongtx.router."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kongtx.router import Match, Router, cut_port, not_found_body


def api(name: str, host: str | None = None, path: str | None = None) -> dict[str, Any]:
    return {
        "id": name,
        "name": name,
        "request_host": host,
        "request_path": path,
        "upstream_url": "http://up",
        "strip_request_path": False,
        "preserve_host": False,
    }


def names(match: Match | None) -> str | None:
    return None if match is None else match.api["name"]


# ------------------------------------------------------------------ host pass


def test_exact_host_matches() -> None:
    """An API is found by its exact request_host."""
    r = Router.build([api("a", host="example.com")])
    m = r.match(["example.com"], "/")
    assert m == Match(r.match(["example.com"], "/").api, "host-exact", "example.com")  # type: ignore[union-attr]
    assert names(m) == "a"


def test_host_port_is_cut() -> None:
    """The Host value is cut at the first ':' before matching."""
    r = Router.build([api("a", host="example.com")])
    m = r.match(["example.com:8000"], "/")
    assert names(m) == "a"
    assert m is not None and m.matched_host == "example.com"


def test_host_is_case_insensitive() -> None:
    """Hosts compare lower-cased (our deliberate difference), the matched value keeps its case."""
    r = Router.build([api("a", host="Example.COM")])
    m = r.match(["eXample.com"], "/")
    assert names(m) == "a"
    assert m is not None and m.matched_host == "eXample.com"


def test_leading_wildcard_matches_one_or_more_labels() -> None:
    """``*.ex.org`` matches a.ex.org and a.b.ex.org, not ex.org itself."""
    r = Router.build([api("w", host="*.ex.org")])
    assert names(r.match(["a.ex.org"], "/")) == "w"
    assert names(r.match(["a.b.ex.org"], "/")) == "w"
    assert r.match(["ex.org"], "/") is None
    assert r.match([".ex.org"], "/") is None
    assert r.match(["aex.org"], "/") is None


def test_trailing_wildcard_matches_any_suffix() -> None:
    """``ex.*`` matches ex.com and ex.co.uk, not ex. or other.com."""
    r = Router.build([api("w", host="ex.*")])
    m = r.match(["ex.co.uk"], "/")
    assert names(m) == "w" and m is not None and m.kind == "host-wildcard"
    assert names(r.match(["ex.com"], "/")) == "w"
    assert r.match(["ex."], "/") is None
    assert r.match(["other.com"], "/") is None


def test_exact_beats_wildcard() -> None:
    """An exact request_host wins over a wildcard that also matches."""
    r = Router.build([api("w", host="*.ex.org"), api("e", host="a.ex.org")])
    assert names(r.match(["a.ex.org"], "/")) == "e"


def test_first_wildcard_in_db_order_wins() -> None:
    """Among matching wildcards, the first in datastore order wins."""
    r = Router.build([api("second", host="a.*"), api("first", host="*.b.c")])
    assert names(r.match(["a.b.c"], "/")) == "second"
    r = Router.build([api("first", host="*.b.c"), api("second", host="a.*")])
    assert names(r.match(["a.b.c"], "/")) == "first"


def test_every_host_value_then_x_host_override() -> None:
    """Every Host value is tried in order, then X-Host-Override values; first hit wins."""
    r = Router.build([api("a", host="a.com"), api("b", host="b.com")])
    assert names(r.match(["nope.com", "b.com", "a.com"], "/")) == "b"


def test_host_beats_path() -> None:
    """A host match wins even if the path matches another API."""
    r = Router.build([api("h", host="h.com"), api("p", path="/p")])
    m = r.match(["h.com"], "/p/x")
    assert names(m) == "h" and m is not None and m.kind == "host-exact"


# ------------------------------------------------------------------ path pass


def test_path_matches_whole_segments() -> None:
    """``/mockbin`` matches /mockbin and /mockbin/x but not /mockbin-x."""
    r = Router.build([api("m", path="/mockbin")])
    assert names(r.match([], "/mockbin")) == "m"
    assert names(r.match([], "/mockbin/")) == "m"
    assert names(r.match([], "/mockbin/x/y")) == "m"
    assert r.match([], "/mockbin-x") is None
    assert r.match([], "/mock") is None


def test_longer_path_first_and_root_last() -> None:
    """Paths are tried in descending string order: /a/b before /a, / last."""
    r = Router.build([api("root", path="/"), api("a", path="/a"), api("ab", path="/a/b")])
    assert names(r.match([], "/a/b/c")) == "ab"
    assert names(r.match([], "/a/bc")) == "a"
    assert names(r.match([], "/zzz")) == "root"
    assert names(r.match([], "/")) == "root"


def test_path_dot_is_a_regex_wildcard() -> None:
    """A ``.`` in request_path matches any character, as Kong's regex did."""
    r = Router.build([api("v", path="/v1.0")])
    assert names(r.match([], "/v1.0/x")) == "v"
    assert names(r.match([], "/v1x0/x")) == "v"
    assert r.match([], "/v1/0") is not None  # "." matches "/" too, as in Kong
    assert r.match([], "/v10") is None


def test_dotted_and_literal_paths_keep_kong_order() -> None:
    """Between a literal and a dotted candidate the greater string wins (Kong's sort)."""
    r = Router.build([api("dot", path="/a.c"), api("lit", path="/abc")])
    assert names(r.match([], "/abc/x")) == "lit"
    # "/abc" sorts before "/a.c/d" ("b" > "."), so it wins although it is shorter.
    r = Router.build([api("dot", path="/a.c/d"), api("lit", path="/abc")])
    assert names(r.match([], "/abc/d")) == "lit"
    assert names(r.match([], "/axc/d")) == "dot"


def test_percent_encoded_path_does_not_match_decoded() -> None:
    """Paths compare raw: an encoded request_path does not match the decoded URI."""
    r = Router.build([api("e", path="/caf%C3%A9")])
    assert r.match([], "/café") is None
    assert names(r.match([], "/caf%C3%A9/x")) == "e"


def test_path_is_case_sensitive() -> None:
    """Paths are compared case-sensitively."""
    r = Router.build([api("p", path="/Path")])
    assert r.match([], "/path") is None


def test_no_match() -> None:
    """No host and no path match: None."""
    r = Router.build([api("a", host="a.com", path="/a")])
    assert r.match(["b.com"], "/b") is None


def test_apis_without_host_or_path_are_ignored() -> None:
    """Blank request_host / request_path values never match anything."""
    r = Router.build([api("a", host="  ", path="")])
    assert r.match(["  "], "/") is None
    assert len(r) == 0


def test_cut_port() -> None:
    """cut_port drops everything from the first ':'."""
    assert cut_port("h:1") == "h"
    assert cut_port("h") == "h"


# ------------------------------------------------------------------ 404 body


def test_not_found_body() -> None:
    """The 404 body lists host values (ports cut) and the path without query."""
    body = json.loads(not_found_body(["a.com:80", "b"], "/x"))
    assert body == {
        "message": "API not found with these values",
        "request_host": ["a.com", "b"],
        "request_path": "/x",
    }


def test_not_found_body_empty_hosts_is_object() -> None:
    """With no host values the list serialises as ``{}`` (Lua's empty table)."""
    assert b'"request_host":{}' in not_found_body([], "/")


# ------------------------------------------------------------------ scale


def test_many_apis() -> None:
    """10,000 APIs: lookups still find the right one (the index, not a scan)."""
    apis = [api(f"h{i}", host=f"h{i}.example.com") for i in range(5000)]
    apis += [api(f"p{i}", path=f"/p{i}/x") for i in range(5000)]
    r = Router.build(apis)
    assert names(r.match(["h4999.example.com"], "/")) == "h4999"
    assert names(r.match([], "/p1234/x/y")) == "p1234"
    assert r.match([], "/p1234/y") is None


# ------------------------------------------------------------------ hypothesis


def kong_reference(apis: list[dict[str, Any]], hosts: list[str], path: str) -> str | None:
    """Kong 0.9's algorithm, literally: dict, wildcard list, sorted path list, regexes."""
    exact: dict[str, dict[str, Any]] = {}
    wild: list[tuple[re.Pattern[str], dict[str, Any]]] = []
    for a in apis:
        h = a["request_host"]
        if h:
            h = h.lower()
            if "*" in h:
                pat = "^" + re.escape(h).replace(r"\*", ".+") + "$"
                wild.append((re.compile(pat), a))
            else:
                exact.setdefault(h, a)
    for raw in hosts:
        h = raw.split(":", 1)[0].lower()
        if h in exact:
            return str(exact[h]["name"])
        for pat, a in wild:
            if pat.match(h):
                return str(a["name"])
    uri = path if path.endswith("/") else path + "/"
    for a in sorted(
        (a for a in apis if a["request_path"]), key=lambda a: a["request_path"], reverse=True
    ):
        rp = a["request_path"]
        if rp == "/":
            return str(a["name"])
        if re.match(re.escape(rp).replace(r"\.", ".") + "/", uri):
            return str(a["name"])
    return None


labels = st.sampled_from(["a", "b", "ex", "org", "co", "uk", "A"])
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
wild_hosts = st.one_of(hosts, hosts.map(lambda h: "*." + h), hosts.map(lambda h: h + ".*"))
segments = st.sampled_from(["a", "b", "a.b", "ab", "x", "v1.0", "v1x0", "c"])
paths = st.one_of(
    st.just("/"), st.lists(segments, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.one_of(st.none(), wild_hosts), st.one_of(st.none(), paths)), max_size=8),
    st.lists(st.one_of(hosts, hosts.map(lambda h: h + ":80")), max_size=3),
    paths,
)
def test_matches_kong_reference(
    defs: list[tuple[str | None, str | None]], host_values: list[str], path: str
) -> None:
    """The indexed router gives the same API as Kong's linear algorithm, for any table."""
    seen_hosts: set[str] = set()
    seen_paths: set[str] = set()
    apis = []
    for i, (h, p) in enumerate(defs):
        # request_host and request_path are unique columns
        if h is not None and h.lower() in seen_hosts:
            h = None
        if p is not None and p in seen_paths:
            p = None
        if h is None and p is None:
            continue
        seen_hosts.add(h.lower()) if h else None
        seen_paths.add(p) if p else None
        apis.append(api(f"api{i}", host=h, path=p))
    router = Router.build(apis)
    assert names(router.match(host_values, path)) == kong_reference(apis, host_values, path)


def test_targets_built_with_the_index() -> None:
    """Each API's target is read from its row once, when the index is built: every
    match of the API (by path, by host however written) carries that one object."""
    r = Router.build([api("a", host="example.com"), api("b", path="/b")])
    by_path = r.match([], "/b/x")
    again = r.match(["other"], "/b")
    assert by_path is not None and again is not None and by_path == again
    assert by_path.target is again.target
    assert by_path.kind == "path" and by_path.target.base == "http://up"
    by_host = r.match(["example.com:80"], "/")
    assert by_host is not None and by_host.matched_host == "example.com"
    cased = r.match(["Example.com"], "/")
    assert cased is not None and cased.matched_host == "Example.com"
    assert cased.target is by_host.target and cased.api is by_host.target.api
    assert cased == Match(by_host.api, "host-exact", "Example.com")
