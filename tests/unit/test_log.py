"""log_level filters kongtx's own events."""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from kongtx import log


class LevelTests(SynchronousTestCase):
    def test_level_filters_lower_events(self) -> None:
        """At 'error' a warning is dropped and an error passes; 'debug' lets debug through."""
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.addCleanup(log.set_level, "notice")
        lg = log.logger("kongtx.test")
        log.set_level("error")
        lg.warn("dropped")
        lg.error("kept {n}", n=1)
        log.set_level("debug")
        lg.debug("debug kept")
        formats = [e["log_format"] for e in seen if e.get("log_namespace") == "kongtx.test"]
        self.assertEqual(formats, ["kept {n}", "debug kept"])
