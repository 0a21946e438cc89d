# -*- test-case-name: tests.unit.test_plugin_bot_detection -*-
"""The built-in bot list of bot-detection (SPEC §4.4).

Kong 0.9 shipped a dozen regexes taken from the ua-parser project's
``regexes.yaml`` (its "bots" and "downloaders" families); these are the same
families, kept in Python ``re`` syntax.  Why a maintained list rather than Kong's
verbatim: the ua-parser patterns gained new crawlers since 2016 (Applebot,
DuckDuckBot, SEO crawlers, headless browsers) and users expect them blocked.
Command-line clients (curl, wget, HTTP libraries) are not on it, as in Kong: an
operator who wants them out lists them in ``blacklist``.  A whitelist entry
always wins over this list.
"""

from __future__ import annotations

BOTS: tuple[str, ...] = (
    # monitoring and preview fetchers
    r"(Pingdom\.com_bot_version_)(\d+)\.(\d+)",
    r"(facebookexternalhit)/(\d+)\.(\d+)",
    r"Google.*/\+/web/snippet",
    r"(Twitterbot)/(\d+)\.(\d+)",
    # "/name-0.0" style bots
    r"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)"
    r"[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    # "name/0.0" style bots
    r"\b(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub"
    r"|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|PathDefender|Peew|PostPost|Steeler|Twitterbot"
    r"|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)"
    r"(?:\.(\d+)(?:\.(\d+))?)?",
    r"(MSIE) (\d+)\.(\d+)([a-z]\d?)?;.* MSIECrawler",
    # scripted downloaders
    r"(Google-HTTP-Java-Client|Apache-HttpClient|http%20client|Python-urllib|HttpMonitor"
    r"|TLSProber|WinHTTP|JNLP|HeadlessChrome|PhantomJS)(?:[ /](\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
    # named crawlers
    r"(1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]+-Agent"
    r"|AdsBot-Google(?:-[a-z]+)?|altavista|AppEngine-Google|Applebot|archive.*?\.org_bot"
    r"|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]+)*|bingbot|BingPreview|blitzbot"
    r"|BlogBridge|Catchpoint bot|[Cc]harlotte|Checklinks|clumboot|ConveraCrawler|CRAWL-E"
    r"|Daumoa(?:-feedfetcher)?|DuckDuckBot|Feed Seeker Bot|findlinks|gigabot|GomezAgent"
    r"|(?:[a-zA-Z]+-)?Googlebot(?:-[a-zA-Z]+)?|gsa-crawler|heritrix|ia_archiver|ICC-Crawler"
    r"|larbin|Mail\.RU_Bot|Mediapartners-Google|MJ12bot|msnbot(?:-media *)?|Scrapy|Slurp"
    r"|SemrushBot|AhrefsBot|DotBot|Yandex\w+|YodaoBot(?:-[A-z]+)?|Yahoo! Slurp|ZyBorg)"
    r"(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
    # generic "name/0.0" and "name 0.0" matchers
    r"(?:/[A-Za-z0-9\.]+)? *([A-Za-z0-9 \-_\!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot"
    r"|[Ss]pider|[Cc]rawl[a-z]*))/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"(?:/[A-Za-z0-9\.]+)? *([A-Za-z0-9 _\!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot"
    r"|[Ss]pider|[Cc]rawl[a-z]*)) (\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    # anything naming itself a spider, scraper, crawler or bot (but not CUBOT phones)
    r"((?:[A-z0-9]+|[A-z\-]+ ?)?(?: the )?(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape"
    r"|[A-Za-z0-9-]*(?:[^C][^Uu])[Bb]ot|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]*)"
    r"(?:(?:[ /]| v)(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
)
