"""The proxy's header storage and header-name decoding: kongtx.proxy.headers."""

from __future__ import annotations

from kongtx.proxy.headers import HEADER_NAMES, HeaderList, header_name


def test_header_list_operations() -> None:
    """HeaderList is case-insensitive, multi-valued and keeps order."""
    h = HeaderList([("A", "1"), ("b", "2"), ("a", "3")])
    assert h.get("a") == "1" and h.get_all("A") == ["1", "3"]
    h.set("A", "9")
    assert h.items() == [("A", "9"), ("b", "2")]
    h.add("c", "4")
    h.remove("B")
    assert h.items() == [("A", "9"), ("c", "4")]
    assert "C" in h and len(h) == 2


def test_set_keeps_the_first_place_and_drops_the_later_values() -> None:
    """set() replaces every value of a name at the first one's place, after it nothing moves."""
    h = HeaderList([("X", "1"), ("Y", "2"), ("x", "3"), ("Z", "4")])
    h.set("x", "new")
    assert h.items() == [("x", "new"), ("Y", "2"), ("Z", "4")]
    h.set("W", "5")
    assert h.items()[-1] == ("W", "5")


def test_adopted_triples_are_shared_and_copies_are_not() -> None:
    """from_lowered() adopts the parser's triples as they are; copy() is independent."""
    triples = [("host", "Host", "a"), ("x-one", "X-One", "1")]
    h = HeaderList.from_lowered(triples)
    h.add_lowered("x-two", "X-Two", "2")
    assert triples[-1] == ("x-two", "X-Two", "2")
    other = h.copy()
    other.remove_all({"host", "x-two"})
    assert other.items() == [("X-One", "1")]
    assert h.items() == [("Host", "a"), ("X-One", "1"), ("X-Two", "2")]
    assert list(h) == h.items() and "host" in h and 7 not in h


def test_header_name_is_decoded_once_and_remembered() -> None:
    """header_name() gives (name, lower-case name) for latin-1 bytes and keeps the answer."""
    raw = b"X-Test-\xe9-Headers-Module"
    HEADER_NAMES.pop(raw, None)
    first = header_name(raw)
    assert first == ("X-Test-\xe9-Headers-Module", "x-test-\xe9-headers-module")
    assert HEADER_NAMES[raw] is first
    assert header_name(raw) is first
    HEADER_NAMES.pop(raw, None)
