# -*- test-case-name: tests.unit.test_log_transports -*-
"""How logging plugins ship their messages, without ever hurting the proxy (SPEC §4.6).

Every sender here is fire-and-forget for the caller (``send`` returns at once,
never raises) and bounded: a slow or dead receiver fills a fixed-size queue,
after which messages are dropped and counted (``dropped``), so memory cannot
grow without bound and the client's response is never delayed.

* :class:`UdpSender`: one non-blocking datagram per message (udp-log, statsd,
  datadog, loggly); host names are resolved by the reactor and cached.
* :class:`TcpSender`: one pooled keep-alive connection per (host, port)
  (tcp-log).  Twisted pauses us when the socket's buffer is full; messages wait
  in the bounded queue meanwhile.  Idle connections close after ``keepalive``.
* :class:`HttpSender`: hand-written HTTP/1.1 requests on keep-alive connections
  (http-log, runscope, galileo), a few connections per endpoint, one request
  in flight on each; https without certificate verification (as Kong).
* :class:`FileSender`: appends lines to a file whose descriptor stays open,
  written by a thread so a slow disk never blocks the reactor (file-log).
* :class:`SyslogSender`: datagrams to the local syslog socket (syslog).

Senders are node-wide (:func:`senders`): handlers come and go with their
configuration, connections and queues stay.

One module per transport; this package re-exports what the handlers use.
"""

from __future__ import annotations

from kongtx.plugins.log_transports.common import MAX_QUEUE, LogDropped, quiet
from kongtx.plugins.log_transports.file import FileSender
from kongtx.plugins.log_transports.http import HttpSender
from kongtx.plugins.log_transports.registry import Senders, senders
from kongtx.plugins.log_transports.syslog import SyslogSender
from kongtx.plugins.log_transports.tcp import TcpSender
from kongtx.plugins.log_transports.udp import UdpSender

__all__ = [
    "MAX_QUEUE",
    "FileSender",
    "HttpSender",
    "LogDropped",
    "Senders",
    "SyslogSender",
    "TcpSender",
    "UdpSender",
    "quiet",
    "senders",
]
