"""For every test: a failing test's report shows the tail of each kongtx node running.

A node's temporary prefix goes with its fixture, so without this a node that crashed
(or refused a call) leaves nothing to read.  The full logs are copied out too
(tests/harness.py: ``kept_logs``, ``$KONG_TEST_LOG_DIR``).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.harness import failure_sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, text in failure_sections(f"{item.nodeid}-{report.when}"):
            report.sections.append((title, text))
