"""A write made in a proxy worker of one node is honoured by another node at once.

Two real nodes on one PostgreSQL, ``db_update_frequency`` = 60 s (so the periodic
catch-up cannot be what carries the change): the first serves its proxy with two
worker processes, the second serves its proxy itself.  A worker writes with its
own origin (``<node>-worker-<pid>``); its master publishes the worker's log rows
as doorbells (kongtx.cluster.events), which the second node has never heard of.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.cluster.support import Cluster, cached, members, wait_for
from tests.e2e.proxy_support import Node, Upstream, http
from tests.servers.postgres import PostgresServer

SLOW_CATCH_UP = {"KONG_DB_UPDATE_FREQUENCY": "60"}


@pytest.fixture(scope="module")
def cluster(pg: PostgresServer) -> Iterator[Cluster]:
    """Node 0 with two proxy workers, node 1 without; both alive in each other's view."""
    c = Cluster(pg, SLOW_CATCH_UP)
    try:
        c.add(KONG_NGINX_WORKER_PROCESSES="2")
        c.add()
        both_alive = lambda: all(  # noqa: E731
            list(members(n).values()).count("alive") == 2 for n in c.nodes
        )
        assert wait_for(both_alive, 30), [members(n) for n in c.nodes]
        yield c
    finally:
        c.stop()


def post_token(node: Node, path: str, params: dict[str, str]) -> dict[str, Any]:
    result = http(
        "POST",
        f"{node.proxy}{path}/oauth2/token",
        urlencode(params).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Proto": "https"},
    )
    assert result.status == 200, (result.status, result.body)
    return dict(json.loads(result.body))


def test_a_token_refreshed_in_a_worker_is_refused_by_another_node_at_once(
    cluster: Cluster, upstream: Upstream
) -> None:
    """OAuth2 password grant, the token used (so cached) on node 1, then refreshed through
    node 0's proxy (a worker deletes the old token): node 1 drops it within seconds."""
    workers_node, other = cluster.nodes
    path = "/oa-" + uuid.uuid4().hex[:8]
    api = workers_node.add_api(
        request_path=path, strip_request_path=True, upstream_url=upstream.url
    )
    plugin = workers_node.add_plugin(
        api, "oauth2", {"enable_password_grant": True, "accept_http_if_already_terminated": True}
    )
    consumer = workers_node.admin_call("POST", "/consumers", {"username": "u-" + path[4:]})
    app = workers_node.admin_call(
        "POST",
        f"/consumers/{consumer['id']}/oauth2",
        {"name": "app", "redirect_uri": "http://app.test/cb"},
    )
    client = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    # the API reaches node 1 by its doorbell (node 0's own origin)
    assert wait_for(lambda: http("GET", other.proxy + path + "/x").status == 401, 10)
    first = post_token(
        workers_node,
        path,
        {
            "grant_type": "password",
            "provision_key": plugin["config"]["provision_key"],
            "authenticated_userid": "someone",
            **client,
        },
    )
    old = {"Authorization": f"Bearer {first['access_token']}"}
    key = f"oauth2_token:{first['access_token']}"
    # the token's creation (a worker's write too) reaches node 1 at once and drops the key:
    # let that doorbell pass before caching the token there
    time.sleep(1.0)
    assert http("GET", other.proxy + path + "/x", headers=old).status == 200
    assert cached(other, key)

    started = time.monotonic()
    fresh = post_token(
        workers_node,
        path,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], **client},
    )
    assert wait_for(lambda: not cached(other, key), 10), "node 1 still caches the old token"
    assert time.monotonic() - started < 10  # db_update_frequency is 60 s
    assert http("GET", other.proxy + path + "/x", headers=old).status == 401
    new = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert http("GET", other.proxy + path + "/x", headers=new).status == 200
