"""kongtx.store.common.run_to_end: a coroutine whose awaits never suspend, run to its end."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from kongtx.store.common import run_to_end


async def _plain(value: int) -> int:
    return value + 1


async def _chain() -> int:
    return await _plain(1) + await _plain(2)


async def _failing() -> int:
    await _plain(0)
    raise KeyError("gone")


async def _waiting(d: Deferred[int]) -> int:
    return await d


def test_result_of_plain_awaits() -> None:
    assert run_to_end(_chain()) == 5


def test_exception_propagates() -> None:
    with pytest.raises(KeyError):
        run_to_end(_failing())


def test_a_real_wait_is_refused_and_the_coroutine_closed() -> None:
    d: Deferred[int] = Deferred()
    coroutine = _waiting(d)
    with pytest.raises(RuntimeError, match="cannot run to its end"):
        run_to_end(coroutine)
    assert coroutine.cr_frame is None  # closed, not left suspended
