# -*- test-case-name: tests.unit.test_plugin_rate_limiting -*-
"""What every rate-limiting counter policy shares: the windows and the :class:`Counters` interface.

Windows are fixed calendar periods in UTC (:func:`period_starts`), each counter living
one period length (:data:`PERIOD_SECONDS`).  A policy (:mod:`kongtx.plugins.ratelimit_local`,
the ``cluster`` and ``redis`` ones in :mod:`kongtx.plugins.ratelimit_policies`) says how
one counter is keyed, read and added to; :class:`Counters` asks for several periods at
once.  For response-ratelimiting the counters carry a limit ``name``: its keys become
``response-ratelimit:<api_id>:<id>:<start>:<name>:<period>``, as Kong's did.
"""

from __future__ import annotations

import calendar
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LIFETIMES", "PERIODS", "PERIOD_INDEX", "PERIOD_SECONDS", "Counters", "period_starts"]

#: every period, shortest first
PERIODS = ("second", "minute", "hour", "day", "month", "year")

#: how long a local or Redis counter lives (SPEC §4.4; year is 365 days since 0.9.9)
PERIOD_SECONDS: Mapping[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
    "year": 31536000,
}
#: each period's lifetime, in PERIODS order (seconds)
LIFETIMES = tuple(float(PERIOD_SECONDS[p]) for p in PERIODS)
#: each period's place in PERIODS
PERIOD_INDEX: Mapping[str, int] = {p: i for i, p in enumerate(PERIODS)}

# the windows of the last second asked for: every request of that second shares them
_last_second = -1
_last_starts: dict[str, int] = {}


def period_starts(now: float) -> Mapping[str, int]:
    """The start of the current window of every period, epoch ms, aligned in UTC.

    Computed once a second: the requests of one second get the same (read-only)
    mapping, which the ``local`` counters also use to remember their keys
    (:meth:`kongtx.plugins.ratelimit_local.LocalCounters.row`).
    """
    global _last_second, _last_starts
    second = int(now)
    if second == _last_second:
        return _last_starts
    starts = _period_starts(second)
    _last_second, _last_starts = second, starts
    return starts


def _period_starts(second: int) -> dict[str, int]:
    t = time.gmtime(second)
    minute = second - t.tm_sec
    hour = minute - 60 * t.tm_min
    day = hour - 3600 * t.tm_hour
    month = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0))
    year = calendar.timegm((t.tm_year, 1, 1, 0, 0, 0, 0, 0, 0))
    return {
        "second": second * 1000,
        "minute": minute * 1000,
        "hour": hour * 1000,
        "day": day * 1000,
        "month": month * 1000,
        "year": year * 1000,
    }


class Counters(ABC):
    """What the rate-limiting handlers need from a policy.

    A policy says how one counter is keyed (:meth:`key`), read (:meth:`read`) and
    added to (:meth:`add`); asking for several periods at once is the same for all.
    """

    async def usage(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None = None,
    ) -> dict[str, int]:
        """The current count of each of ``periods`` (0 when none yet)."""
        values = await self.read(self.keys(api_id, identifier, starts, periods, name))
        return dict(zip(periods, values, strict=True))

    async def increment(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        amount: int,
        name: str | None = None,
    ) -> None:
        """Add ``amount`` to the counter of every period (all six, as Kong does)."""
        await self.add(self.keys(api_id, identifier, starts, PERIODS, name), amount)

    def keys(
        self,
        api_id: str,
        identifier: str,
        starts: Mapping[str, int],
        periods: Sequence[str],
        name: str | None,
    ) -> list[Any]:
        """The key of each of ``periods``' counters, in that order."""
        return [self.key(api_id, identifier, starts[p], p, name) for p in periods]

    @staticmethod
    def key(api_id: str, identifier: str, start: int, period: str, name: str | None) -> Any:
        """Kong's shared-dict (and Redis) key of one counter."""
        if name is None:
            return f"ratelimit:{api_id}:{identifier}:{start}:{period}"
        return f"response-ratelimit:{api_id}:{identifier}:{start}:{name}:{period}"

    @abstractmethod
    async def read(self, keys: list[Any]) -> list[int]:
        """The count of each key (0 when none yet)."""

    @abstractmethod
    async def add(self, keys: list[Any], amount: int) -> None:
        """Add ``amount`` to the counters of ``keys``: one a period, in :data:`PERIODS` order."""
