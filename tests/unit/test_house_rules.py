"""House rules of STYLE.md that a grep can hold: one clock owner, injected reactors, filtered logs."""

from __future__ import annotations

import re
from pathlib import Path

KONGTX = Path(__file__).resolve().parents[2] / "kongtx"


def sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(KONGTX.rglob("*.py"))]


def offenders(pattern: str, allowed: set[str]) -> list[str]:
    rx = re.compile(pattern, re.M)
    found = []
    for path, text in sources():
        rel = path.relative_to(KONGTX.parent).as_posix()
        if rel in allowed:
            continue
        for m in rx.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{rel}:{line}: {m.group(0).strip()}")
    return found


def test_timers_go_through_the_clock() -> None:
    """No callLater or LoopingCall outside kongtx/clock.py (STYLE rule 5)."""
    assert offenders(r"\.callLater\(|LoopingCall\(", {"kongtx/clock.py"}) == []


def test_no_module_level_global_reactor() -> None:
    """Library code takes its reactor as an argument; no module-level global reactor import (rule 4)."""
    assert offenders(r"^from twisted\.internet import reactor\b", set()) == []


def test_loggers_are_level_filtered() -> None:
    """Every logger comes from kongtx.log.logger(), so log_level applies to it (rule 18)."""
    assert offenders(r"\bLogger\(", {"kongtx/log.py"}) == []


def test_no_inline_callbacks() -> None:
    """New code is async def, never inlineCallbacks (rule 6)."""
    assert offenders(r"inlineCallbacks", set()) == []
