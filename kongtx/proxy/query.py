# -*- test-case-name: tests.unit.test_upstream_request -*-
"""Query strings on the proxy: decoded as ``ngx.req.get_uri_args`` does, encoded as
``ngx.encode_args`` does, and remembered.

Plugins read and change a request's args (:meth:`kongtx.proxy.context.ProxyContext`
parses them when first asked); what goes upstream is the args encoded again.  Clients
repeat the same few query strings, so a raw query's args and its upstream encoding are
remembered (a bounded table) and reused while no plugin changed the args.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_to_bytes

#: OpenResty's default for ngx.req.get_uri_args(): later args are dropped.
MAX_ARGS = 100


def parse_query(raw: str, limit: int = MAX_ARGS) -> list[tuple[str, str | None]]:
    """Decode a raw query string like ``ngx.req.get_uri_args``.

    ``+`` is a space, ``%xx`` is decoded once, a key without ``=`` is a bare flag
    (value ``None``); empty pieces are skipped; only the first ``limit`` args count.
    """
    args: list[tuple[str, str | None]] = []
    if not raw:
        return args
    for piece in raw.split("&"):
        if not piece:
            continue
        if len(args) >= limit:
            break
        if "=" in piece:
            key, value = piece.split("=", 1)
            args.append((_unescape(key), _unescape(value)))
        else:
            args.append((_unescape(piece), None))
    return args


def _unescape(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text  # nothing to decode (the common case): the same text
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "surrogateescape")


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: text made of unreserved characters only: left as it is (checked in C)
_ALL_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*\Z")


def escape_uri_component(text: str) -> str:
    """Percent-encode everything but unreserved characters, with lower-case hex."""
    if _ALL_UNRESERVED.match(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    if all(b in _UNRESERVED for b in data):
        return text
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02x}" for b in data)


def _arg_key(arg: tuple[str, str | None]) -> str:
    return arg[0]


def encode_query(args: list[tuple[str, str | None]]) -> str:
    """Re-encode args the way Kong 0.9 sent them upstream (SPEC §3.2, "Query string").

    Keys sorted alphabetically (stable, so repeated keys keep their order); a bare
    flag or an empty value is emitted as the bare key (``a=`` becomes ``a``).
    """
    if not args:
        return ""
    parts: list[str] = []
    for key, value in sorted(args[:MAX_ARGS], key=_arg_key):
        k = escape_uri_component(key)
        if value is None or value == "":
            parts.append(k)
        else:
            parts.append(f"{k}={escape_uri_component(value)}")
    return "&".join(parts)


class _Query:
    """A raw query string's args (never handed out: callers get a copy) and their
    upstream encoding, made once."""

    __slots__ = ("args", "encoded")

    def __init__(self, args: list[tuple[str, str | None]]) -> None:
        self.args = args
        self.encoded: str | None = None


#: raw query strings seen lately -> their args (clients repeat the same few queries)
_QUERIES: dict[str, _Query] = {}
#: raw queries at most remembered, and the longest one remembered (bounds the memory)
_MAX_QUERIES: Final = 1024
_MAX_QUERY_LENGTH: Final = 512


def _query_of(raw: str) -> _Query:
    query = _QUERIES.get(raw)
    if query is None:
        query = _Query(parse_query(raw))
        if len(raw) <= _MAX_QUERY_LENGTH:
            if len(_QUERIES) >= _MAX_QUERIES:
                _QUERIES.clear()
            _QUERIES[raw] = query
    return query


def query_args(raw: str) -> list[tuple[str, str | None]]:
    """:func:`parse_query` of ``raw`` (a new list: the caller may change it), remembered."""
    if not raw:
        return []
    return list(_query_of(raw).args)


def encoded_query(raw: str) -> str:
    """``encode_query(parse_query(raw))``, remembered: the query string sent upstream
    for a raw one whose args nobody changed."""
    if not raw:
        return ""
    query = _query_of(raw)
    encoded = query.encoded
    if encoded is None:
        encoded = query.encoded = encode_query(query.args)
    return encoded


def encode_args(raw: str, args: list[tuple[str, str | None]]) -> str:
    """:func:`encode_query` of ``args``, the args of the raw query ``raw`` as plugins
    left them: remembered when they are still the raw query's own."""
    if not args:
        return ""
    if raw:
        query = _QUERIES.get(raw)
        if query is not None and query.args == args:
            return encoded_query(raw)
    return encode_query(args)
