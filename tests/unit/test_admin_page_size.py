"""``?size=``: what the Admin API's pagination makes of any value (never a 500)."""

from __future__ import annotations

from kongtx.admin.routes.crud import DEFAULT_PAGE_SIZE, page_size


def test_page_size_odd_values() -> None:
    """Non-ASCII digits are not a size (int() fails on "²": was a 500); a size beyond any
    store's integer (sqlite's 64 bits: OverflowError, a 500) is capped, not refused."""
    assert page_size("7") == 7
    assert page_size(["3", "9"]) == 9
    assert page_size("\u00b2") == DEFAULT_PAGE_SIZE
    assert page_size("\u0663") == DEFAULT_PAGE_SIZE
    huge = page_size("99999999999999999999")
    assert 1_000_000 <= huge < 2**31
