"""bot-detection at request time (SPEC §4.4)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kongtx.plugins.bot_detection import handler as bot
from kongtx.plugins.bot_detection.handler import Handler
from tests.fakes import FakeContext

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.0.0 Safari/537.36"
)
BOTS = [
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "facebookexternalhit/1.1",
    "Twitterbot/1.0",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Python-urllib/3.11",
    "Apache-HttpClient/4.5.13 (Java/17)",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
]


def access(h: Handler, *uas: str) -> FakeContext:
    ctx = FakeContext(headers=[("User-Agent", ua) for ua in uas])
    h.access(ctx)
    return ctx


class BotDetectionTests(SynchronousTestCase):
    def test_builtin_bots_are_refused_with_empty_403(self) -> None:
        """Known bots get 403 with an empty body; a browser passes."""
        h = Handler({"whitelist": [], "blacklist": []})
        for ua in BOTS:
            self.assertEqual(access(h, ua).response, (403, None, {}), ua)
        self.assertIsNone(access(h, BROWSER).response)

    def test_no_user_agent_passes(self) -> None:
        """A request without a User-Agent is allowed."""
        self.assertIsNone(access(Handler({})).response)

    def test_two_user_agents_are_400(self) -> None:
        """Two User-Agent headers are a 400 with SPEC's message."""
        self.assertEqual(
            access(Handler({}), BROWSER, BROWSER).response,
            (400, {"message": "Only one User-Agent header allowed"}, {}),
        )

    def test_whitelist_wins_and_blacklist_blocks(self) -> None:
        """A whitelist match allows even a known bot; a blacklist match blocks a browser."""
        h = Handler({"whitelist": ["^Googlebot"], "blacklist": ["Chrome/120"]})
        self.assertIsNone(access(h, BOTS[0]).response)
        self.assertEqual(access(h, BROWSER).response, (403, None, {}))

    def test_user_agent_is_trimmed_and_verdict_cached(self) -> None:
        """The User-Agent is trimmed; verdicts are cached and the cache is bounded."""
        h = Handler({"blacklist": ["^evil$"]})
        self.assertEqual(access(h, "  evil  ").response, (403, None, {}))
        self.assertEqual(h.verdicts, {"evil": False})
        old = bot.CACHE_SIZE
        bot.CACHE_SIZE = 3
        try:
            for i in range(5):
                access(h, f"agent-{i}")
            self.assertEqual(list(h.verdicts), ["agent-2", "agent-3", "agent-4"])
        finally:
            bot.CACHE_SIZE = old
