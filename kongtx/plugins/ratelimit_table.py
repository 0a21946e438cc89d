# -*- test-case-name: tests.unit.test_shared_counters,tests.unit.test_plugin_rate_limiting -*-
"""The ``local`` policy's counters of one process: a dict, compiled (issue 8).

:class:`~kongtx.plugins.ratelimit_local.ProcessCounters` keeps its counters in a
:class:`CountTable`; rate-limiting's access phase counts in it directly (one compiled
call per request, no interpreted frame).  Kept apart from ``ratelimit_local`` because
that module's classes are subclassed by pure code (interpreted classes cannot subclass
compiled ones); this one is not subclassed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kongtx.plugins.ratelimit_counters import LIFETIMES

__all__ = ["CountTable"]

#: each period's lifetime, in PERIODS order (seconds)
_LIFETIMES: Final[tuple[float, ...]] = LIFETIMES


class _Count:
    """One counter: its value and when it expires (epoch seconds); native attributes,
    so that counting one in allocates nothing."""

    __slots__ = ("expires", "value")

    def __init__(self, value: int, expires: float) -> None:
        self.value = value
        self.expires = expires


class CountTable:
    """Counters by key (:class:`_Count`); expired ones read 0 and are swept at most once
    a second (memory stays bounded by traffic)."""

    def __init__(self) -> None:
        self.counts: dict[str, _Count] = {}
        self.next_sweep = 0.0

    def read(self, stored: list[str], now: float) -> list[int]:
        """The live count of each key at ``now`` (0 when none or expired)."""
        counts = self.counts
        out: list[int] = []
        for key in stored:
            entry = counts.get(key)
            out.append(entry.value if entry is not None and entry.expires > now else 0)
        return out

    def add(self, stored: list[str], amount: int, now: float) -> None:
        """Add ``amount`` to each key's counter (one a period, in PERIODS order): an
        expired one starts again at ``amount``, living its period."""
        if now >= self.next_sweep:
            self.sweep(now)
        counts = self.counts
        lifetimes = _LIFETIMES
        for i in range(len(stored)):
            key = stored[i]
            entry = counts.get(key)
            if entry is None:
                counts[key] = _Count(amount, now + lifetimes[i])
            elif entry.expires <= now:
                entry.value = amount
                entry.expires = now + lifetimes[i]
            else:
                entry.value += amount

    def read_add(
        self, stored: list[str], limits: Sequence[tuple[int, float]], amount: int, now: float
    ) -> list[int]:
        """The count of each limited period (``(index in stored, limit)``); when every one
        is under its limit (``limit - count > 0``), ``amount`` is added to all keys."""
        counts = self.counts
        values: list[int] = []
        room = True
        for index, limit in limits:
            entry = counts.get(stored[index])
            value = entry.value if entry is not None and entry.expires > now else 0
            values.append(value)
            if limit - value <= 0:
                room = False
        if room:
            self.add(stored, amount, now)
        return values

    def sweep(self, now: float) -> None:
        """Forget expired counters (next sweep in a second)."""
        self.next_sweep = now + 1.0
        counts = self.counts
        expired = [k for k, entry in counts.items() if entry.expires <= now]
        for key in expired:
            del counts[key]
