"""Tags (Kong 1.1) through a real node's Admin API: every entity, ``?tags=`` filters, paging."""

from __future__ import annotations

import json
from typing import Any

from proxy_support import Node, Upstream, free_port, http


def _call(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    result = http(method, node.admin + path, data, headers)
    return result.status, (result.json() if result.body else None)


def _unique() -> str:
    return f"t{free_port()}"


def test_tagged_api_still_proxies(kong_node: Node, upstream: Upstream) -> None:
    """An API created with tags renders them and routes like any other."""
    name = _unique()
    api = kong_node.add_api(
        name=name, request_host=f"{name}.test", upstream_url=upstream.url, tags=["team-a", "v1"]
    )
    assert api["tags"] == ["team-a", "v1"]
    assert kong_node.admin_call("GET", f"/apis/{name}")["tags"] == ["team-a", "v1"]
    assert http("GET", kong_node.proxy + "/", headers={"Host": f"{name}.test"}).status == 200


def test_filters_all_and_any(kong_node: Node) -> None:
    """``?tags=a,b`` keeps consumers holding both, ``?tags=a/b`` those holding either."""
    a, b = _unique(), _unique()
    for username, tags in (("both", [a, b]), ("only-a", [a]), ("only-b", [b]), ("none", None)):
        body: dict[str, Any] = {"username": f"{username}-{a}"}
        if tags is not None:
            body["tags"] = tags
        assert _call(kong_node, "POST", "/consumers", body)[0] == 201

    def names(query: str) -> tuple[list[str], int]:
        page = kong_node.admin_call("GET", f"/consumers?tags={query}")
        return sorted(c["username"].rsplit("-", 1)[0] for c in page["data"]), page["total"]

    assert names(f"{a},{b}") == (["both"], 1)
    assert names(f"{a}/{b}") == (["both", "only-a", "only-b"], 3)
    assert names(b) == (["both", "only-b"], 2)


def test_paging_follows_next(kong_node: Node) -> None:
    """Following ``next`` with the filter repeated walks every tagged entity once."""
    tag = _unique()
    for i in range(5):
        kong_node.admin_call("POST", "/consumers", {"username": f"{tag}-{i}", "tags": [tag]})
    kong_node.admin_call("POST", "/consumers", {"username": f"{tag}-x"})
    seen: list[str] = []
    page = kong_node.admin_call("GET", f"/consumers?tags={tag}&size=2")
    while True:
        assert page["total"] == 5
        seen += [c["username"] for c in page["data"]]
        if "offset" not in page:
            break
        page = kong_node.admin_call("GET", f"/consumers?tags={tag}&size=2&offset={page['offset']}")
    assert sorted(seen) == [f"{tag}-{i}" for i in range(5)]


def test_plugins_and_credentials(kong_node: Node, upstream: Upstream) -> None:
    """Plugins and credentials carry tags and list by them."""
    tag = _unique()
    api = kong_node.add_api(name=tag, request_host=f"{tag}.test", upstream_url=upstream.url)
    status, plugin = _call(
        kong_node, "POST", f"/apis/{api['id']}/plugins", {"name": "key-auth", "tags": [tag]}
    )
    assert (status, plugin["tags"]) == (201, [tag])
    assert kong_node.admin_call("GET", f"/plugins?tags={tag}")["total"] == 1
    kong_node.admin_call("POST", "/consumers", {"username": tag})
    status, key = _call(
        kong_node, "POST", f"/consumers/{tag}/key-auth", {"key": tag, "tags": [tag]}
    )
    assert (status, key["tags"]) == (201, [tag])
    kong_node.admin_call("POST", f"/consumers/{tag}/key-auth", {"key": tag + "-plain"})
    listed = kong_node.admin_call("GET", f"/consumers/{tag}/key-auth?tags={tag}")
    assert [k["key"] for k in listed["data"]] == [tag]


def test_errors(kong_node: Node) -> None:
    """Bad tags and bad filters are 400 with Kong's messages."""
    status, body = _call(kong_node, "POST", "/consumers", {"username": _unique(), "tags": ["a b"]})
    assert (status, body) == (
        400,
        {"tags": "invalid tag 'a b': expected printable ascii (except `,` and `/`)"},
    )
    status, body = _call(kong_node, "GET", "/apis?tags=a,b,c,d,e,f")
    assert (status, body) == (400, {"tags": "cannot query more than 5 tags"})


def test_patch_clears(kong_node: Node) -> None:
    """PATCH with an empty tags list removes them, and the entity leaves the filter."""
    tag = _unique()
    kong_node.admin_call("POST", "/consumers", {"username": tag, "tags": [tag]})
    patched = kong_node.admin_call("PATCH", f"/consumers/{tag}", {"tags": []})
    assert "tags" not in patched
    assert kong_node.admin_call("GET", f"/consumers?tags={tag}") == {"data": [], "total": 0}
