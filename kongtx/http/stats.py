# -*- test-case-name: tests.unit.test_fast_frontend,tests.unit.test_admin_support -*-
"""nginx stub_status counters, without twisted.web.

Both proxy front-ends and the Admin API's site report their connections with
:func:`connection_stats`.  It lives apart from :mod:`kongtx.http.site` (a
``twisted.web.server.Site``) so that the fast front-end can use it without
importing twisted.web.server, which with what it imports (``twisted.spread.pb``,
``twisted.web.template``...) is ~2.8 MB per worker process (issue 8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["connection_stats"]


def connection_stats(
    channels: Mapping[Any, int], accepted: int, handled: int, total_requests: int
) -> dict[str, int]:
    """nginx stub_status counters from a listener's connections (value: requests in flight).

    Shared by both proxy front-ends and the Admin API's site, so ``GET /status``
    sums like with like.
    """
    writing = sum(1 for n in channels.values() if n)
    active = len(channels)
    return {
        "connections_active": active,
        "connections_reading": 0,
        "connections_writing": writing,
        "connections_waiting": active - writing,
        "connections_accepted": accepted,
        "connections_handled": handled,
        "total_requests": total_requests,
    }
