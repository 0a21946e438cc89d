# -*- test-case-name: tests.unit.test_tap -*-
"""``twistd kong``: Options and makeService, nothing else (STYLE.md rule 2)."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from kongtx.config import ConfigError
from kongtx.config_loading import load_config


class Options(usage.Options):
    """``twistd kong [-c kong.conf] [-p prefix]``; KONG_* variables override the file."""

    optParameters = [
        ["conf", "c", None, "Configuration file (default: /etc/kong.conf or /etc/kong/kong.conf)."],
        ["prefix", "p", None, "Prefix directory (default: the prefix property)."],
    ]

    def postOptions(self) -> None:
        try:
            self["config"] = load_config(self["conf"], os.environ, self["prefix"])
        except ConfigError as e:
            raise usage.UsageError("\n".join(e.errors)) from e


def makeService(options: Options) -> IService:
    """Build the node's service tree on the global reactor (the only place that may).

    The reactor is kongtx's (kongtx/reactor.py) unless ``twistd -r <name>`` installed
    another while parsing options, or there is no epoll.
    """
    from kongtx.reactor import install_unless_chosen

    install_unless_chosen()
    from twisted.internet import reactor

    from kongtx.build_info import describe
    from kongtx.log import logger
    from kongtx.node import KongNode

    logger("kongtx.build_info").info(
        "{build}; reactor {reactor}", build=describe(), reactor=type(reactor).__name__
    )
    node: Any = KongNode(options["config"], reactor, conf_path=options["conf"])
    node.started.addCallback(_serving)
    return node  # type: ignore[no-any-return]


def _serving(result: object) -> object:
    """The node is up (listeners bound): what it holds now is not rescanned by the GC."""
    from kongtx.gc_tuning import tune_after_startup

    tune_after_startup()
    return result
