"""Three real kongtx nodes sharing one PostgreSQL, gossiping with encryption on.

Proves the operator-visible promises of the cluster: membership converges, a
change made through any node's Admin API is honoured by every node's proxy, a
wrong key can neither join nor inject invalidations, a SIGKILLed node is marked
failed and its ``nodes`` row expires, and a restarted node rejoins as alive.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from kongtx.cluster import cli, codec
from kongtx.cluster.serf import USER_EVENT, user_msg
from kongtx.config import Address
from tests.cluster.support import (
    Cluster,
    cached,
    kill,
    members,
    name_of,
    proxy_status,
    udp_send,
    wait_all,
    wait_for,
)
from tests.e2e.proxy_support import Node, Upstream, http
from tests.servers.postgres import PostgresServer

KEY = codec.keygen(16)
OTHER_KEY = codec.keygen(16)


@pytest.fixture(scope="module")
def cluster(pg: PostgresServer) -> Iterator[Cluster]:
    """Three nodes, encrypted gossip, all alive and joined."""
    c = Cluster(pg, {"KONG_CLUSTER_ENCRYPT_KEY": KEY})
    try:
        for _ in range(3):
            c.add()
        yield c
    finally:
        c.stop()


def _all_alive(nodes: list[Node], count: int) -> bool:
    return all(
        len(members(n)) >= count and list(members(n).values()).count("alive") == count
        for n in nodes
    )


def test_membership_converges(cluster: Cluster) -> None:
    """Every node lists all three nodes as alive within seconds of starting."""
    assert wait_for(lambda: _all_alive(cluster.nodes, 3), 20), [members(n) for n in cluster.nodes]
    names = {name_of(n) for n in cluster.nodes}
    assert all(set(members(n)) == names for n in cluster.nodes)


def test_change_through_any_node_is_honoured_by_every_proxy(
    cluster: Cluster, upstream: Upstream
) -> None:
    """Create through each node in turn, delete through the next: every proxy follows at once."""
    nodes = cluster.nodes
    for i, origin in enumerate(nodes):
        path = f"/any{i}-{uuid.uuid4().hex[:6]}"
        for n in nodes:  # prime every router cache with the old state
            assert proxy_status(n, path) == 404
        api = origin.add_api(name=path[1:], request_path=path, upstream_url=upstream.url)
        started = time.monotonic()
        wait_all(nodes, lambda n, p=path: proxy_status(n, p) == 200, 5)
        # the doorbell, not the 1 s catch-up, should have carried it
        assert time.monotonic() - started < 3
        nodes[(i + 1) % len(nodes)].delete_api(api)
        wait_all(nodes, lambda n, p=path: proxy_status(n, p) == 404, 5)


def test_rpc_port_serves_members_and_reachability(cluster: Cluster) -> None:
    """``kong cluster members|reachability`` through a node's cluster_listen_rpc."""
    node = cluster.nodes[0]
    call = cli.caller(Address("127.0.0.1", node.ports["cluster_rpc"]))
    lines = cli.members(call)
    self_line = [line for line in lines if line.startswith(name_of(node) + "\t")]
    assert self_line and self_line[0].endswith("\talive")
    assert len(lines) == 3
    report, ok = cli.reachability(call)
    assert ok, report


def _forged_event(api_id: str) -> bytes:
    payload = json.dumps(
        {
            "type": "ENTITY_UPDATED",
            "collection": "apis",
            "primary_key": ["id"],
            "entity": {"id": api_id},
        }
    ).encode()
    return user_msg(USER_EVENT, {"LTime": 3, "Name": "kong", "Payload": payload, "CC": False})


def test_wrong_key_can_neither_join_nor_inject(cluster: Cluster, upstream: Upstream) -> None:
    """A node with another key is refused; packets sealed with another key or none are dropped."""
    a = cluster.nodes[0]
    intruder = cluster.add(KONG_CLUSTER_ENCRYPT_KEY=OTHER_KEY)
    try:
        address = f"127.0.0.1:{a.ports['cluster']}"
        reply = http(
            "POST",
            intruder.admin + "/cluster",
            json.dumps({"address": address}).encode(),
            {"Content-Type": "application/json"},
        )
        assert reply.status == 400
        assert reply.json()["message"].startswith("Error joining the cluster")
        time.sleep(1)
        assert name_of(intruder) not in members(a)
    finally:
        intruder.stop()
        cluster.nodes.remove(intruder)

    api = a.add_api(name="inject", request_path="/inject", upstream_url=upstream.url)
    assert wait_for(lambda: proxy_status(a, "/inject") == 200, 5)
    assert cached(a, "ALL_APIS_BY_DIC")
    msg = _forged_event(api["id"])
    port = a.ports["cluster"]
    udp_send(port, msg)  # plaintext
    udp_send(port, codec.encrypt(codec.decode_key(OTHER_KEY), msg))
    time.sleep(1)
    assert cached(a, "ALL_APIS_BY_DIC"), "an unauthenticated packet invalidated the cache"
    udp_send(port, codec.encrypt(codec.decode_key(KEY), msg))
    assert wait_for(lambda: not cached(a, "ALL_APIS_BY_DIC"), 3), "the keyed packet was ignored"


def _node_rows(node: Node) -> int:
    """How many live ``nodes`` rows the store shows (expired TTL rows are not read)."""
    return int(node.admin_call("GET", "/status")["database"]["nodes"])


def test_killed_node_fails_its_row_expires_and_a_restart_rejoins(
    cluster: Cluster, upstream: Upstream
) -> None:
    """SIGKILL → failed; force-leave → left; the row expires after the TTL; a restart is alive again."""
    a, b, c = cluster.nodes[:3]
    victim = name_of(c)
    assert _node_rows(a) == 3
    assert proxy_status(c, "/late") == 404
    kill(c)
    for n in (a, b):
        assert wait_for(lambda n=n: members(n).get(victim) == "failed", 20), members(n)
    a.add_api(name="late", request_path="/late", upstream_url=upstream.url)
    # DELETE /cluster (force-leave) turns the failed member "left" on every node
    reply = http(
        "DELETE",
        a.admin + "/cluster",
        json.dumps({"name": victim}).encode(),
        {"Content-Type": "application/json"},
    )
    assert (reply.status, reply.body) == (200, b"")
    for n in (a, b):
        assert wait_for(lambda n=n: members(n).get(victim) == "left", 10), members(n)
    # TTL 60 s (the minimum), refreshed every 30 s: gone within 60 s of the kill
    assert wait_for(lambda: _node_rows(a) == 2, 75, interval=1)
    c.start()
    assert name_of(c) == victim
    for n in (a, b, c):
        assert wait_for(lambda n=n: members(n).get(victim) == "alive", 20), members(n)
    assert proxy_status(c, "/late") == 200
    assert wait_for(lambda: _node_rows(a) == 3, 5)
