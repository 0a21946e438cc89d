"""Capture golden vectors from a real ``serf agent`` for tests/unit/test_cluster_codec.py.

Run ``python -m tests.cluster.capture_vectors > tests/unit/cluster_vectors.json``
where ``serf`` is installed.  For each mode (plain, encrypted) it listens on a free
127.0.0.1 port with plain sockets, asks the agent to ``serf join`` it, records the
agent's push/pull stream (LZW-compressed by default), answers with a kongtx
state so the agent adopts us, then records the UDP datagrams the agent sends
(pings, compound gossip).  A third capture first teaches the agent 150 members with
random tags, then records the push/pull it sends on a second join: an LZW stream long
enough to fill Go's 4096-code table.  The codec tests decode these bytes without an agent.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from kongtx.cluster import codec, transport
from kongtx.cluster.serf import encode_tags
from tests.cluster.test_serf_interop import Agent

NAME = "capture"


def _state(port: int, extra: int = 0) -> bytes:
    serf_state = bytes([2]) + codec.pack(
        {
            "LTime": 1,
            "StatusLTimes": {NAME: 1},
            "LeftMembers": [],
            "EventLTime": 1,
            "Events": [],
            "QueryLTime": 1,
        }
    )
    head = codec.encode(
        codec.PUSH_PULL, {"Nodes": 1 + extra, "UserStateLen": len(serf_state), "Join": False}
    )
    fakes = b"".join(
        codec.pack(
            {
                "Name": f"fake-{i:03d}-" + "n" * 20,
                "Addr": socket.inet_aton("127.0.0.1"),
                "Port": 1 + i,
                "Meta": encode_tags({"role": f"gateway-{i}", "id": os.urandom(48).hex()}),
                "Incarnation": 1,
                "State": 0,
                "Vsn": codec.VSN,
            }
        )
        for i in range(extra)
    )
    node = codec.pack(
        {
            "Name": NAME,
            "Addr": socket.inet_aton("127.0.0.1"),
            "Port": port,
            "Meta": b"\xff\x80",
            "Incarnation": 1,
            "State": 0,
            "Vsn": codec.VSN,
        }
    )
    return head + node + fakes + serf_state


def _exchange(tcp: socket.socket, keys: list[bytes], reply: bytes) -> bytes:
    conn, _ = tcp.accept()
    conn.settimeout(5)
    stream = b""
    while transport.parse_stream(stream, keys) is None:
        stream += conn.recv(65536)
    conn.sendall(transport.frame_stream(reply, keys[0] if keys else None))
    conn.close()
    return stream


def capture(key: str | None, extra: int = 0) -> dict[str, Any]:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    tcp.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    agent = Agent(key)
    keys = [codec.decode_key(key)] if key else []
    try:
        joiner = subprocess.Popen(
            ["serf", "join", f"-rpc-addr=127.0.0.1:{agent.rpc}", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
        )
        stream = _exchange(tcp, keys, _state(port, extra))
        joiner.wait(10)
        if extra:
            # join again: the agent now pushes every member it learnt from us
            joiner = subprocess.Popen(
                ["serf", "join", f"-rpc-addr=127.0.0.1:{agent.rpc}", f"127.0.0.1:{port}"],
                stdout=subprocess.PIPE,
            )
            stream = _exchange(tcp, keys, _state(port, extra))
            joiner.wait(10)
        packets: list[bytes] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(packets) < 8:
            ready, _, _ = select.select([udp], [], [], 0.2)
            if ready:
                packets.append(udp.recv(65536))
        return {
            "key": key,
            "port": port,
            "stream": stream.hex(),
            "packets": [p.hex() for p in packets],
        }
    finally:
        agent.stop()
        tcp.close()
        udp.close()


def main() -> None:
    vectors = {
        "plain": capture(None),
        "encrypted": capture(codec.keygen(32)),
        "large": capture(None, extra=150),
    }
    json.dump(vectors, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
