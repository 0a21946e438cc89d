"""``twistd -r kongtx``: kongtx's epoll reactor (kongtx/reactor.py) by name.

``twistd kong`` installs it anyway when no ``-r`` is given; this names it for other
twistd plugins, and lists it in ``twistd --help-reactors``.
"""

from twisted.application.reactors import Reactor

kongtx = Reactor(
    "kongtx", "kongtx.reactor", "epoll without the per-event log context (Linux; kongtx)"
)
