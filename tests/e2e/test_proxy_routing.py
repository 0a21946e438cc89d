"""Routing through a real node (SPEC §3.1): hosts, wildcards, paths, 404, router refresh."""

from __future__ import annotations

import uuid

from proxy_support import Node, Upstream, http


def uniq(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def test_exact_host_case_insensitive(kong_node: Node, upstream: Upstream) -> None:
    """An API is reached by its request_host, whatever the case of the Host header."""
    host = uniq() + ".example.com"
    kong_node.add_api(request_host=host, upstream_url=upstream.url)
    r = http("GET", kong_node.proxy + "/anything", headers={"Host": host.upper() + ":8000"})
    assert r.status == 200, r.body
    assert r.json()["path"] == "/anything"
    assert r.header("Via") == "kong/0.9.9"


def test_x_host_override(kong_node: Node, upstream: Upstream) -> None:
    """X-Host-Override is tried after Host and is forwarded unchanged."""
    host = uniq() + ".override.com"
    kong_node.add_api(request_host=host, upstream_url=upstream.url)
    r = http("GET", kong_node.proxy + "/", headers={"Host": "nope.com", "X-Host-Override": host})
    assert r.status == 200
    assert ["X-Host-Override", host] in r.json()["headers"]


def test_wildcards(kong_node: Node, upstream: Upstream) -> None:
    """Leading and trailing wildcards match one or more characters."""
    base = uniq()
    kong_node.add_api(request_host=f"*.{base}.org", upstream_url=upstream.url)
    kong_node.add_api(request_host=f"{base}.*", upstream_url=upstream.url + "/trailing")
    assert http("GET", kong_node.proxy + "/", headers={"Host": f"a.b.{base}.org"}).status == 200
    r = http("GET", kong_node.proxy + "/", headers={"Host": f"{base}.co.uk"})
    assert r.json()["path"] == "/trailing/"
    assert http("GET", kong_node.proxy + "/", headers={"Host": f"{base}org"}).status == 404


def test_path_segments_and_strip(kong_node: Node, upstream: Upstream) -> None:
    """Paths match whole segments; strip_request_path removes the prefix."""
    path = "/" + uniq("p")
    kong_node.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
    r = http("GET", kong_node.proxy + path + "/x/y?b=2&a=1")
    assert r.status == 200
    body = r.json()
    assert body["path"] == "/x/y" and body["query"] == "a=1&b=2"
    assert ["X-Forwarded-Prefix", path] in body["headers"]
    assert http("GET", kong_node.proxy + path + "-other").status == 404


def test_longest_path_first(kong_node: Node, upstream: Upstream) -> None:
    """/a/b wins over /a for /a/b/c, /a serves /a/c."""
    base = "/" + uniq("l")
    kong_node.add_api(request_path=base, upstream_url=upstream.url + "/short")
    kong_node.add_api(request_path=base + "/b", upstream_url=upstream.url + "/long")
    assert http("GET", kong_node.proxy + base + "/b/c").json()["path"].startswith("/long")
    assert http("GET", kong_node.proxy + base + "/c").json()["path"].startswith("/short")


def test_host_beats_path(kong_node: Node, upstream: Upstream) -> None:
    """A Host match wins over a path match, and strip never applies to it."""
    host = uniq() + ".hostwins.com"
    path = "/" + uniq("hp")
    kong_node.add_api(request_host=host, upstream_url=upstream.url + "/host")
    kong_node.add_api(request_path=path, strip_request_path=True, upstream_url=upstream.url)
    r = http("GET", kong_node.proxy + path + "/z", headers={"Host": host})
    assert r.json()["path"] == f"/host{path}/z"


def test_not_found(kong_node: Node) -> None:
    """No match: 404 JSON naming the host values (port cut) and the path, Server, no Via."""
    r = http("GET", kong_node.proxy + "/nowhere/at/all?q=1", headers={"Host": "unknown.test:81"})
    assert r.status == 404
    assert r.json() == {
        "message": "API not found with these values",
        "request_host": ["unknown.test"],
        "request_path": "/nowhere/at/all",
    }
    assert r.header("Server") == "kong/0.9.9"
    assert r.header("Via") is None
    assert r.header("Content-Type") == "application/json; charset=utf-8"


def test_router_refreshed_after_changes(kong_node: Node, upstream: Upstream) -> None:
    """Creating, then deleting an API changes routing at once (ALL_APIS_BY_DIC invalidated)."""
    path = "/" + uniq("r")
    assert http("GET", kong_node.proxy + path).status == 404
    api = kong_node.add_api(request_path=path, upstream_url=upstream.url)
    assert http("GET", kong_node.proxy + path).status == 200
    kong_node.delete_api(api)
    assert http("GET", kong_node.proxy + path).status == 404
