# -*- test-case-name: tests.unit.test_plugin_log_serializer -*-
"""JSON as Kong's cjson wrote it, and ngx's header and query-arg tables in it.

The basic log serializer (:mod:`kongtx.plugins.log_serializer`) and the logging
plugins encode with :func:`encode` (compact, non-ASCII kept as UTF-8, json's own
escaping); a request's headers and query args are ngx tables (names lower-cased, a
repeated one a list, a bare flag ``true``): :func:`headers_json` and
:func:`query_json` write their JSON in one pass, without building the tables.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable
from typing import Any, Final, cast

__all__ = [
    "dumps",
    "encode",
    "LastHeaders",
    "LastQuery",
    "headers_json",
    "headers_json_like",
    "headers_table",
    "json_value",
    "ngx_headers",
    "ngx_query",
    "query_json",
    "query_table",
    "quote",
]


def _ngx_table(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """An ngx args/headers table: the first value of a name as is, a repeated one a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            current = out[key]
            if isinstance(current, list):
                current.append(value)
            else:
                out[key] = [current, value]
        else:
            out[key] = value
    return out


def ngx_headers(items: list[tuple[str, str]]) -> dict[str, Any]:
    # most requests repeat no header: one comprehension, the grouping only when needed
    table = {name.lower(): value for name, value in items}
    if len(table) == len(items):
        return table
    return _ngx_table((name.lower(), value) for name, value in items)


def ngx_query(args: list[tuple[str, str | None]]) -> dict[str, Any]:
    table: dict[str, Any] = {key: True if value is None else value for key, value in args}
    if len(table) == len(args):
        return table
    return _ngx_table((key, True if value is None else value) for key, value in args)


def headers_table(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``ngx.req.get_headers()``: lower-case names; a repeated header is a list."""
    return ngx_headers(list(items))


def query_table(args: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """``ngx.req.get_uri_args()``: a bare flag is ``True``, a repeated key a list."""
    return ngx_query(list(args))


#: json.dumps(separators=(",", ":"), ensure_ascii=False, default=str), built once: json.dumps
#: builds an encoder per call when given options.  No circular check: what is encoded here is
#: a serializer's message (or a plugin's), never self-referencing.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=str, check_circular=False
)
#: json's own string escaping when ensure_ascii is off (C): what dumps does to a str
quote: Final = json.encoder.encode_basestring
#: the C encoder _ENCODER.encode makes on every call (json.encoder.JSONEncoder.iterencode),
#: made once with the same arguments; None where json has no C accelerator
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_ITERENCODE: Any = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(None, str, quote, None, ":", ",", False, False, True)
)


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)``."""
    if _ITERENCODE is not None:
        return "".join(_ITERENCODE(value, 0))
    return _ENCODER.encode(value)


def json_value(value: Any) -> str:
    return quote(value) if type(value) is str else dumps(value)


def encode(message: Any) -> bytes:
    """Compact JSON, as cjson wrote it (non-ASCII kept as UTF-8)."""
    return dumps(message).encode("utf-8")


class _Key:
    """One lower-case header name in a headers object's JSON: its members by value
    (``,"name":"value"`` and the value's bytes, made once for a repeating value), and
    the call that last saw the name (a name seen twice in one call is a repeated header)."""

    __slots__ = ("key", "members", "seen")

    def __init__(self, lname: str) -> None:
        #: ``,"name":``
        self.key = "," + quote(lname) + ":"
        #: value -> (``,"name":"value"``, len(value) in UTF-8): bounded, short values only
        self.members: dict[str, tuple[str, int]] = {}
        self.seen = 0

    def member(self, value: str) -> tuple[str, int]:
        """``(',"name":"value"', the value's bytes)``, remembered for a short value."""
        member = (
            self.key + quote(value),
            len(value) if value.isascii() else len(value.encode("utf-8")),
        )
        if len(value) <= _VALUE_MAX:
            members = self.members
            calls = _CALLS
            if len(members) >= _VALUES_LIMIT:
                # a value that changes on every request (a counter, a date)
                calls.members -= len(members)
                members.clear()
            members[value] = member
            calls.members += 1
        return member


class _Calls:
    """How many headers objects were encoded, and how many members all keys hold
    (native counters: a module global's writes would be dict operations)."""

    __slots__ = ("count", "keys", "members", "parts", "repeated", "sizes")

    def __init__(self) -> None:
        self.count = 0
        self.members = 0
        #: the last :func:`headers_json`'s parts, each entry's size, and whether a name
        #: repeated in it (what :func:`headers_json_like` keeps)
        self.parts: list[str] = []
        self.sizes: list[int] = []
        self.keys: list[_Key] = []
        self.repeated = False


#: a header name as received -> the :class:`_Key` of its lower-case name (every spelling
#: of a name shares one): most headers of a node's traffic repeat (Host, Content-Type,
#: Server, Via...) and most of their values too, so each name is lowered and escaped
#: once, each value once per name; bounded (all cleared when full, between two calls)
_KEYS: Final[dict[str, _Key]] = {}
#: lower-case name -> its _Key (the spellings' shared one)
_LOWER_KEYS: Final[dict[str, _Key]] = {}
_KEYS_LIMIT: Final = 2048
#: values kept per name at most, the longest kept, and members kept in all
_VALUES_LIMIT: Final = 64
_VALUE_MAX: Final = 200
_MEMBERS_LIMIT: Final = 4096
_CALLS: Final = _Calls()


def _forget() -> None:
    """Drop every key (only between two calls: within one, a name's key must stay the
    same object for its repeat to be seen)."""
    _KEYS.clear()
    _LOWER_KEYS.clear()
    _CALLS.members = 0


def _key_of(name: str) -> _Key:
    lname = name.lower()
    key = _LOWER_KEYS.get(lname)
    if key is None:
        key = _LOWER_KEYS[lname] = _Key(lname)
    _KEYS[name] = key
    return key


def headers_json(items: list[tuple[str, str, str]]) -> tuple[str, int]:
    """``dumps(ngx_headers(pairs))``, and the bytes the headers take in a head
    (:func:`_head_size` without the first line's): one pass, one join.  ``items`` are
    ``(lower-case name, name, value)`` triples as a HeaderList keeps them (the proxy's
    are passed as they are: no pair list made per request)."""
    calls = _CALLS
    calls.repeated = False
    if not items:
        calls.parts = ["{}"]
        calls.sizes = []
        calls.keys = []
        return "{}", 0
    if (
        len(_KEYS) >= _KEYS_LIMIT
        or len(_LOWER_KEYS) >= _KEYS_LIMIT
        or calls.members >= _MEMBERS_LIMIT
    ):
        _forget()
    stamp = calls.count + 1
    calls.count = stamp
    keys = _KEYS
    size = 4 * len(items)
    repeated = False
    parts: list[str] = ["{"]
    sizes: list[int] = []
    found: list[_Key] = []
    for entry in items:
        name = entry[1]
        value = entry[2]
        key = keys.get(name)
        if key is None:
            key = _key_of(name)
        if key.seen == stamp:
            repeated = True
        key.seen = stamp
        member = key.members.get(value)
        if member is None:
            member = key.member(value)
        parts.append(member[0])
        entry_size = len(name) + member[1]
        sizes.append(entry_size)
        found.append(key)
        size += entry_size
    if repeated:
        # a repeated header: its values become a list (rare)
        calls.repeated = True
        return dumps(ngx_headers([(entry[1], entry[2]) for entry in items])), size
    parts[1] = parts[1][1:]  # the first member has no comma before it
    parts.append("}")
    calls.parts = parts
    calls.sizes = sizes
    calls.keys = found
    return "".join(parts), size


class LastHeaders:
    """The last headers encoded at one place of the message (the request's, the
    response's) and their JSON, member by member: a keep-alive client sends the same
    headers again and again, an upstream answers with the same ones bar a few values
    (Date, a counter), and comparing short strings costs less than looking them up."""

    __slots__ = ("items", "keys", "parts", "size", "sizes", "text")

    def __init__(self) -> None:
        #: the triples last encoded (updated in place: each entry is an immutable tuple)
        self.items: list[tuple[str, str, str]] = []
        #: ``["{", first member without its comma, other members..., "}"]``
        self.parts: list[str] = []
        #: each entry's bytes in a head (name and value), the total, and the JSON
        self.sizes: list[int] = []
        #: each entry's name's key
        self.keys: list[_Key] = []
        self.size = 0
        self.text = "{}"


def headers_json_like(items: list[tuple[str, str, str]], last: LastHeaders) -> tuple[str, int]:
    """:func:`headers_json` of ``items``, the members of ``last`` reused where an entry
    has the same name at the same place (the same names in the same order: a name
    repeated in one is repeated in the other), only changed values encoded."""
    # entries read as tuple objects: as tuple[str, str, str] compiled code would unbox
    # each into a C struct, and box a new tuple to compare or store one
    now = cast(list[tuple[str, ...]], items)
    before = cast(list[tuple[str, ...]], last.items)
    count = len(now)
    if count and count == len(before):
        parts = last.parts
        sizes = last.sizes
        keys = last.keys
        size = last.size
        changed = False
        for i in range(count):
            entry = now[i]
            old = before[i]
            if entry is old:
                continue
            name = entry[1]
            if name != old[1]:
                break
            value = entry[2]
            if value == old[2]:
                continue
            # a changed value (a date, a counter): not kept in its key's members
            text = keys[i].key + quote(value)
            parts[i + 1] = text[1:] if i == 0 else text
            entry_size = len(name) + (len(value) if value.isascii() else len(value.encode("utf-8")))
            size += entry_size - sizes[i]
            sizes[i] = entry_size
            before[i] = entry
            changed = True
        else:
            if changed:
                last.text = "".join(parts)
                last.size = size
            return last.text, size
    text, size = headers_json(items)
    if _CALLS.repeated:
        last.items = []  # a list value: not member by member
        return text, size
    last.items = items.copy()
    last.parts = _CALLS.parts
    last.sizes = _CALLS.sizes
    last.keys = _CALLS.keys
    last.size = size
    last.text = text
    return text, size


class LastQuery:
    """The last query args encoded and their JSON (a client repeats its query)."""

    __slots__ = ("args", "text")

    def __init__(self) -> None:
        self.args: list[tuple[str, str | None]] = []
        self.text = "{}"


def query_json_like(args: list[tuple[str, str | None]], last: LastQuery) -> str:
    """:func:`query_json` of ``args``, ``last``'s when they are the same."""
    if args == last.args:
        return last.text
    text = query_json(args)
    last.args = args.copy()
    last.text = text
    return text


def query_json(args: list[tuple[str, str | None]]) -> str:
    """``dumps(ngx_query(args))``."""
    parts: list[str] = []
    keys: set[str] = set()
    for key, value in args:
        keys.add(key)
        parts.append(f"{quote(key)}:{'true' if value is None else quote(value)}")
    if len(keys) < len(args):
        return dumps(ngx_query(args))
    return "{" + ",".join(parts) + "}"
