"""Upstreams and targets (issue 9) through a real node's Admin API on sqlite.

Creates, validation field maps, the 409 of a duplicate target, 404s, the
cascade from an upstream to its targets, ``?tags=`` filters, and form-encoded
dotted healthcheck keys, all over real HTTP to a started node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from proxy_support import Node, free_port, http, running_node


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with running_node() as started:
        yield started


def call(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    result = http(method, node.admin + path, data, headers)
    return result.status, (result.json() if result.body else None)


def unique() -> str:
    return f"u{free_port()}.test"


def test_create_upstream_and_targets(node: Node) -> None:
    """An upstream with defaults, targets normalised, listed in creation order, found by target."""
    name = unique()
    status, up = call(node, "POST", "/upstreams", {"name": name, "tags": ["e2e"]})
    assert status == 201, up
    assert (up["algorithm"], up["slots"], up["hash_on"]) == ("round-robin", 10000, "none")
    assert up["healthchecks"]["active"]["healthy"]["http_statuses"] == [200, 302]
    assert call(node, "GET", f"/upstreams/{name}") == (200, up)
    assert call(node, "GET", f"/upstreams/{up['id']}") == (200, up)
    made = []
    for target, weight in (("127.0.0.1:9001", 10), ("Backend.Test", 0), ("[::1]:9002", 100)):
        status, row = call(
            node, "POST", f"/upstreams/{name}/targets", {"target": target, "weight": weight}
        )
        assert status == 201, row
        made.append(row)
    assert [t["target"] for t in made] == ["127.0.0.1:9001", "backend.test:8000", "[::1]:9002"]
    assert made[1]["weight"] == 0 and made[0]["upstream_id"] == up["id"]
    status, listed = call(node, "GET", f"/upstreams/{name}/targets")
    assert status == 200 and listed["total"] == 3
    assert [t["id"] for t in listed["data"]] == [t["id"] for t in made]
    assert call(node, "GET", f"/upstreams/{name}/targets/backend.test") == (200, made[1])
    status, patched = call(
        node, "PATCH", f"/upstreams/{name}/targets/127.0.0.1:9001", {"weight": 20}
    )
    assert (status, patched["weight"]) == (200, 20)


def test_validation_errors_are_field_maps(node: Node) -> None:
    """400s name every bad field, nested healthcheck fields by their dotted path."""
    status, body = call(
        node,
        "POST",
        "/upstreams",
        {
            "name": "not a host",
            "slots": 1,
            "healthchecks": {"active": {"timeout": -1, "healthy": {"successes": "x"}}},
        },
    )
    assert status == 400
    assert body == {
        "name": "Invalid name; must be a valid hostname",
        "slots": "value should be between 10 and 65536",
        "healthchecks.active.timeout": "value should be between 0 and 65535",
        "healthchecks.active.healthy.successes": "successes is not a number",
    }
    name = unique()
    assert call(node, "POST", "/upstreams", {"name": name})[0] == 201
    status, body = call(
        node, "POST", f"/upstreams/{name}/targets", {"target": "h:99999", "weight": 2000}
    )
    assert status == 400
    assert body == {
        "target": "Invalid target; not a valid hostname or ip address",
        "weight": "value should be between 0 and 1000",
    }
    status, body = call(node, "POST", "/upstreams", {"name": "x", "hash_fallback": "ip"})
    assert (status, body) == (
        400,
        {"hash_fallback": "Cannot set fallback if primary 'hash_on' is not set"},
    )


def test_form_encoded_dotted_healthchecks(node: Node) -> None:
    """Form fields ``healthchecks.active.*`` set nested values over the defaults."""
    name = unique()
    form = urlencode(
        {
            "name": name,
            "healthchecks.active.healthy.interval": "5",
            "healthchecks.active.unhealthy.http_statuses": "500,503",
        }
    ).encode()
    result = http(
        "POST",
        node.admin + "/upstreams",
        form,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status == 201, result.body
    active = result.json()["healthchecks"]["active"]
    assert active["healthy"] == {"interval": 5, "http_statuses": [200, 302], "successes": 0}
    assert active["unhealthy"]["http_statuses"] == [500, 503]


def test_conflicts_and_not_found(node: Node) -> None:
    """Duplicate name and target: 409 naming the value; unknown upstream or target: 404."""
    name = unique()
    assert call(node, "POST", "/upstreams", {"name": name})[0] == 201
    assert call(node, "POST", "/upstreams", {"name": name}) == (
        409,
        {"name": f"already exists with value '{name}'"},
    )
    assert call(node, "POST", f"/upstreams/{name}/targets", {"target": "a.test"})[0] == 201
    assert call(node, "POST", f"/upstreams/{name}/targets", {"target": "a.test:8000"}) == (
        409,
        {"target": "already exists with value 'a.test:8000'"},
    )
    missing = unique()
    not_found = (404, {"message": "Not found"})
    assert call(node, "GET", f"/upstreams/{missing}") == not_found
    assert call(node, "POST", f"/upstreams/{missing}/targets", {"target": "b.test"}) == not_found
    assert call(node, "GET", f"/upstreams/{name}/targets/b.test") == not_found
    assert call(node, "DELETE", f"/upstreams/{name}/targets/b.test") == not_found
    assert call(node, "PATCH", f"/upstreams/{missing}", {"slots": 100}) == not_found


def test_delete_cascades_to_targets(node: Node) -> None:
    """Deleting an upstream deletes its targets; another upstream's targets stay."""
    name, other = unique(), unique()
    for n in (name, other):
        assert call(node, "POST", "/upstreams", {"name": n})[0] == 201
        for t in ("a.test", "b.test"):
            assert call(node, "POST", f"/upstreams/{n}/targets", {"target": t})[0] == 201
    _, up = call(node, "GET", f"/upstreams/{name}")
    assert call(node, "DELETE", f"/upstreams/{name}") == (204, None)
    assert call(node, "GET", f"/upstreams/{name}")[0] == 404
    assert call(node, "GET", f"/upstreams/{up['id']}/targets")[0] == 404
    assert call(node, "GET", f"/upstreams/{other}/targets")[1]["total"] == 2
    # the name is free again, with no targets
    assert call(node, "POST", "/upstreams", {"name": name})[0] == 201
    assert call(node, "GET", f"/upstreams/{name}/targets")[1] == {"data": [], "total": 0}


def test_tags_filter(node: Node) -> None:
    """``?tags=`` filters upstreams and an upstream's targets."""
    tag = f"t{free_port()}"
    for i, tags in enumerate(([tag, "x"], [tag], ["x"])):
        assert call(node, "POST", "/upstreams", {"name": f"{tag}-{i}.test", "tags": tags})[0] == 201
    _, page = call(node, "GET", f"/upstreams?tags={tag}")
    assert sorted(u["name"] for u in page["data"]) == [f"{tag}-0.test", f"{tag}-1.test"]
    _, page = call(node, "GET", f"/upstreams?tags={tag},x")
    assert [u["name"] for u in page["data"]] == [f"{tag}-0.test"]
    upstream = f"{tag}-0.test"
    call(node, "POST", f"/upstreams/{upstream}/targets", {"target": "a.test", "tags": ["blue"]})
    call(node, "POST", f"/upstreams/{upstream}/targets", {"target": "b.test"})
    _, page = call(node, "GET", f"/upstreams/{upstream}/targets?tags=blue")
    assert [t["target"] for t in page["data"]] == ["a.test:8000"]
