# -*- test-case-name: tests.unit.test_plugin_request_transformer -*-
"""The rules request-transformer and response-transformer share (SPEC §4.5).

Both plugins configure, per part of a message (headers, querystring, body,
json), four rule lists applied in Kong 0.9's order: remove → replace (only
names already present) → add (only names absent) → append (one more value).

Rules are parsed once per configuration.  An entry is ``name:value``: the name
runs to the first colon, further colons right after it are skipped, the rest is
the value (which may contain colons).  An empty value behaves as Kong's ``nil``:
replace removes the name, add and append do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kongtx.plugins.base import Headers

__all__ = ["Rule", "Rules", "append_value", "apply_header_rules", "parse_rules"]

Rule = tuple[str, str | None]

_ENTRY = re.compile(r"^([^:]+):*(.*)$", re.DOTALL)


def parse_rules(entries: Sequence[Any] | None) -> tuple[Rule, ...]:
    """``["a:1", "b::2:3", "c"]`` → ``(("a", "1"), ("b", "2:3"), ("c", None))``."""
    rules: list[Rule] = []
    for entry in entries or ():
        match = _ENTRY.match(str(entry))
        if match is None:  # starts with a colon: no name, Kong could not use it either
            continue
        rules.append((match.group(1), match.group(2) or None))
    return tuple(rules)


def append_value(current: Any, value: str) -> list[Any]:
    """Kong's ``append_value``: a string becomes a list, a list grows, else a new list."""
    if isinstance(current, str):
        return [current, value]
    if isinstance(current, list):
        return [*current, value]
    return [value]


class Rules:
    """The four rule lists of one part (``headers``, ``body``...) of a configuration."""

    __slots__ = ("add", "append", "remove", "replace")

    def __init__(self, config: Mapping[str, Any], part: str) -> None:
        self.remove = _rule_list(config, "remove", part)
        self.replace = _rule_list(config, "replace", part)
        self.add = _rule_list(config, "add", part)
        self.append = _rule_list(config, "append", part)

    def __bool__(self) -> bool:
        return bool(self.remove or self.replace or self.add or self.append)


def _rule_list(config: Mapping[str, Any], kind: str, part: str) -> tuple[Rule, ...]:
    table = config.get(kind) or {}
    return parse_rules(table.get(part) if isinstance(table, Mapping) else None)


def apply_header_rules(
    headers: Headers, rules: Rules, set_host: Callable[[str], None] | None = None
) -> None:
    """Apply the four header rule lists; ``set_host`` is told every ``Host`` value set."""
    for name, _ in rules.remove:
        headers.remove(name)
    for name, value in rules.replace:
        if headers.get(name) is not None:
            if value is None:
                headers.remove(name)
            else:
                headers.set(name, value)
                _told(set_host, name, value)
    for name, value in rules.add:
        if value is not None and headers.get(name) is None:
            headers.set(name, value)
            _told(set_host, name, value)
    for name, value in rules.append:
        if value is not None:
            headers.add(name, value)
            _told(set_host, name, value)


def _told(set_host: Callable[[str], None] | None, name: str, value: str) -> None:
    if set_host is not None and name.lower() == "host":
        set_host(value)
