# -*- test-case-name: tests.unit.test_plugin_bot_detection -*-
"""bot-detection: refuse requests whose User-Agent is a known bot (SPEC §4.4).

Order: the configured whitelist (a match allows), the blacklist (a match
blocks), then the built-in list (:mod:`kongtx.plugins.bot_detection.rules`).  No
User-Agent is allowed; two are a 400.

Verdicts are cached per User-Agent in a bounded LRU held by the handler: Kong
cached them as ``bot_detection:<api_id>:<ua>`` and flushed them on any change of
a bot-detection plugin; a handler lives exactly as long as its API's
configuration, so a configuration change starts a fresh cache, and the bound
keeps clients that invent User-Agents from growing memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from kongtx.plugins.base import BasePlugin, PhaseResult, PluginServices, RequestContext
from kongtx.plugins.bot_detection.rules import BOTS

__all__ = ["BUILTIN", "CACHE_SIZE", "Handler"]

#: how many User-Agent verdicts a handler remembers
CACHE_SIZE = 10000

BUILTIN = tuple(re.compile(rule) for rule in BOTS)

ONE_UA = {"message": "Only one User-Agent header allowed"}


class Handler(BasePlugin):
    """The bot-detection plugin's request-time half."""

    PRIORITY = 2500

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        self.whitelist = tuple(re.compile(r) for r in config.get("whitelist") or ())
        self.blacklist = tuple(re.compile(r) for r in config.get("blacklist") or ())
        #: User-Agent -> allowed?
        self.verdicts: OrderedDict[str, bool] = OrderedDict()

    def allowed(self, user_agent: str) -> bool:
        """The verdict for one (trimmed) User-Agent, from the cache when known."""
        cached = self.verdicts.get(user_agent)
        if cached is not None:
            self.verdicts.move_to_end(user_agent)
            return cached
        verdict = self._judge(user_agent)
        self.verdicts[user_agent] = verdict
        if len(self.verdicts) > CACHE_SIZE:
            self.verdicts.popitem(last=False)
        return verdict

    def _judge(self, user_agent: str) -> bool:
        if any(r.search(user_agent) for r in self.whitelist):
            return True
        if any(r.search(user_agent) for r in self.blacklist):
            return False
        return not any(r.search(user_agent) for r in BUILTIN)

    def access(self, ctx: RequestContext) -> PhaseResult:
        values = ctx.headers.get_all("user-agent")
        if not values:
            return None
        if len(values) > 1:
            ctx.respond(400, ONE_UA)
            return None
        if not self.allowed(values[0].strip()):
            ctx.respond(403)
        return None
