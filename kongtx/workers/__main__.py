# -*- test-case-name: tests.unit.test_workers -*-
"""``python -m kongtx.workers``: one worker, or a proxy-only master with its workers."""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from kongtx.log import logger
from kongtx.workers.control import socket_roles
from kongtx.workers.worker import serve_worker

log = logger("kongtx.workers")


def main(argv: list[str] | None = None) -> None:
    """``python -m kongtx.workers SOCKETS|ROLES|master [conf_path] [prefix]``.

    ``SOCKETS`` (a number, or the sockets' roles: ``proxy,proxy_ssl``): one
    worker, as the master spawns it; ``master``: a
    proxy-only master with its workers (:func:`serve_master`).
    """
    from kongtx.reactor import install_unless_chosen

    install_unless_chosen()  # kongtx's reactor (Twisted's default without epoll)
    from twisted.internet import reactor as global_reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    args = sys.argv[1:] if argv is None else argv
    mode = args[0]
    conf_path = args[1] if len(args) > 1 and args[1] else None
    prefix = args[2] if len(args) > 2 and args[2] else None
    # stdout is the control channel: logs go to stderr (the master's log).
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    reactor: Any = global_reactor
    exit_code = [0]

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            log.failure("worker failed", result)
            exit_code[0] = 1
        reactor.stop()

    if mode == "master":
        # only here: a worker never imports the masters' modules (issue 8: its memory)
        from kongtx.workers.proxy_master import serve_master

        job = lambda: serve_master(reactor, conf_path, prefix)  # noqa: E731
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides when we stop
        roles = socket_roles(mode)
        job = lambda: serve_worker(reactor, conf_path, prefix, roles)  # noqa: E731
    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(job()).addBoth(finished))
    reactor.run()
    sys.exit(exit_code[0])


if __name__ == "__main__":
    main()
