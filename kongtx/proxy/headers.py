# -*- test-case-name: tests.unit.test_headers -*-
"""HTTP headers as the proxy holds them: :class:`HeaderList`, and header names decoded once.

Every side of a proxied request keeps its headers in a :class:`HeaderList`: the
client's request as a front-end parsed it (and plugins change it, through
``kongtx.plugins.base.Headers``), the request sent upstream, the upstream's
response.  The parsers of both sides (``fast_parsing``, ``upstream_parsing``) turn
raw names into ``(name, lower-case name)`` with :func:`header_name`.  A storage
concern shared by the whole proxy, kept apart from the SPEC §3.2 rules of
:mod:`kongtx.proxy.request` that decide what goes upstream.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator


class HeaderList:
    """Ordered, multi-valued, case-insensitive headers (``kongtx.plugins.base.Headers``).

    A plain list of ``(lower-case name, name, value)`` triples: requests carry a
    dozen headers, so a linear scan beats maintaining an index, the order the client
    sent is kept, and each name is lower-cased once, not on every lookup (this
    object is touched a dozen times per proxied request).
    """

    __slots__ = ("_items",)

    def __init__(
        self,
        items: Iterable[tuple[str, str]] | None = None,
        lowered: list[tuple[str, str, str]] | None = None,
    ) -> None:
        """``items``: ``(name, value)`` pairs; or ``lowered``, triples adopted as they
        are (:meth:`from_lowered`)."""
        if lowered is not None:
            self._items: list[tuple[str, str, str]] = lowered
        elif items is None:
            self._items = []
        else:
            self._items = [(k.lower(), k, v) for k, v in items]

    @staticmethod
    def from_lowered(items: list[tuple[str, str, str]]) -> HeaderList:
        """Adopt ``(lower-case name, name, value)`` triples as they are (no copy).

        The fast front-end lower-cases each name once while parsing.  (A static
        method: compiled, ``HeaderList()`` is a direct call, ``cls()`` a generic one;
        no empty list made first, to be dropped at once.)
        """
        return HeaderList(None, items)

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or ``None``."""
        return self.get_lowered(name.lower())

    def get_lowered(self, lname: str) -> str | None:
        """:meth:`get` with ``lname`` lower-case already (a constant on the hot path)."""
        for entry in self._items:
            if entry[0] == lname:
                return entry[2]
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order."""
        return self.get_all_lowered(name.lower())

    def get_all_lowered(self, lname: str) -> list[str]:
        """:meth:`get_all` with ``lname`` lower-case already."""
        return [entry[2] for entry in self._items if entry[0] == lname]

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by ``value`` (kept at the first one's place)."""
        lname = name.lower()
        items = self._items
        n = len(items)
        i = 0
        while i < n:
            if items[i][0] == lname:
                items[i] = (lname, name, value)
                # later values of the name go (rare: most names come once)
                j = i + 1
                while j < len(items):
                    if items[j][0] == lname:
                        del items[j]
                    else:
                        j += 1
                return
            i += 1
        items.append((lname, name, value))

    def add(self, name: str, value: str) -> None:
        """Append one more value of ``name``."""
        self._items.append((name.lower(), name, value))

    def add_lowered(self, lname: str, name: str, value: str) -> None:
        """:meth:`add` with ``lname`` given (``name.lower()``: a constant on the hot path)."""
        self._items.append((lname, name, value))

    def remove(self, name: str) -> None:
        """Drop every value of ``name``."""
        lname = name.lower()
        self._items = [e for e in self._items if e[0] != lname]

    def remove_all(self, names: Collection[str]) -> None:
        """Drop every value of every (lower-case) name in ``names``, in one pass."""
        self._items = [e for e in self._items if e[0] not in names]

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order."""
        return [(entry[1], entry[2]) for entry in self._items]

    def copy(self) -> HeaderList:
        """An independent copy."""
        return HeaderList(None, self._items.copy())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((k, v) for _, k, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HeaderList({self.items()!r})"


#: header names as received -> (name, lower-case name): a client or upstream sends the
#: same dozen names again and again; decoded and lower-cased once (bounded)
HEADER_NAMES: dict[bytes, tuple[str, str]] = {}


def header_name(raw: bytes) -> tuple[str, str]:
    """``(name, name.lower())`` of a header name as parsed (latin-1), remembered."""
    known = HEADER_NAMES.get(raw)
    if known is None:
        name = raw.decode("latin-1")
        known = (name, name.lower())
        if len(HEADER_NAMES) < 2048:
            HEADER_NAMES[raw] = known
    return known
