# -*- test-case-name: tests.unit.test_cli -*-
"""``kong cluster``, ``kong version`` and ``kong roar``: asking about the node, not running it."""

from __future__ import annotations

import argparse
import base64
import os
import platform

import kongtx
from kongtx.cli.node import admin_json, require_running
from kongtx.cli.output import CliError, CliLog, prefix_config


def cmd_cluster(args: argparse.Namespace, log: CliLog) -> int:
    """``keygen`` prints a key; ``members`` and ``force-leave`` ask the running node.

    Kong shelled out to the ``serf`` agent's RPC; the membership lives in the node
    here, so we ask its Admin API (``/cluster``) on ``admin_listen``.
    """
    if args.command == "keygen":
        log(base64.b64encode(os.urandom(16)).decode("ascii"))
        return 0
    config = prefix_config(log, args.prefix)
    require_running(config)
    if args.command == "members":
        body = admin_json(config, "GET", "/cluster")
        for member in body.get("data", []):
            log(f"{member.get('name')}\t{member.get('address')}\t{member.get('status')}")
        return 0
    if args.command == "reachability":
        # serf's _serf_ping query, asked through the node's cluster_listen_rpc port
        from kongtx.cluster import cli as cluster_cli

        try:
            lines, ok = cluster_cli.reachability(cluster_cli.caller(config.cluster_listen_rpc))
        except cluster_cli.ClusterCliError as e:
            raise CliError(str(e)) from e
        for line in lines:
            log(line)
        return 0 if ok else 1
    if not args.node:
        raise CliError("you need to specify the node to force-leave")
    log(f"force-leaving {args.node}")
    admin_json(config, "DELETE", "/cluster", {"name": args.node})
    log(f"left node {args.node}")
    return 0


def cmd_version(args: argparse.Namespace, log: CliLog) -> int:
    """``0.9.9``, or with ``--all`` the versions of everything underneath."""
    if not args.all:
        log(kongtx.__version__)
        return 0
    import twisted

    log(f"Kong: {kongtx.__version__}")
    log(f"kongtx: {kongtx.__version__}")
    log(f"Twisted: {twisted.__version__}")
    log(f"Python: {platform.python_version()} ({platform.python_implementation()})")
    return 0


ROAR = r"""
Kong, Monolith destroyer.

       .--.   .--.
      ( (  \_/  ) )
       '-.(o o).-'
         /  ^  \
        |  \_/  |      kongtx {version}
     .--'\_____/'--.
    /  /|  |||  |\  \
   /__/ |__|||__| \__\
        [__]  [__]
"""


def cmd_roar(args: argparse.Namespace, log: CliLog) -> int:
    """ASCII art, as Kong does."""
    log(ROAR.format(version=kongtx.__version__).rstrip("\n"))
    return 0
