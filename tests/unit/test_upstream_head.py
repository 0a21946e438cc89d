"""The upstream request head and URL split (kongtx.proxy.upstream_request)."""

from __future__ import annotations

import pytest

from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream_request import build_head, split_url


def test_head_framed_by_the_client() -> None:
    headers = HeaderList(
        [("Host", "up.com"), ("Content-Length", "99"), ("X-A", "1"), ("Transfer-Encoding", "x")]
    )
    assert build_head("GET", "/p?q", headers, None) == (
        b"GET /p?q HTTP/1.1\r\nHost: up.com\r\nX-A: 1\r\n\r\n"
    )
    assert build_head("POST", "/", headers, 5) == (
        b"POST / HTTP/1.1\r\nHost: up.com\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"
    )
    assert build_head("PUT", "/", HeaderList([]), None) == (
        b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    )
    assert build_head("POST", "/", HeaderList([("A", "é")]), None, chunked=True) == (
        b"POST / HTTP/1.1\r\nA: \xe9\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


@pytest.mark.parametrize("value", ["1\r\nX-Injected: 1", "a\nb", "a\rb", "\r\n"])
def test_cr_or_lf_in_a_value_refused(value: str) -> None:
    headers = HeaderList([("Host", "up.com"), ("X-Bad", value), ("X-After", "ok")])
    with pytest.raises(UpstreamError) as err:
        build_head("GET", "/", headers, None)
    assert err.value.status == 502 and "X-Bad" in err.value.reason


@pytest.mark.parametrize("name", ["", "X Bad", "X\tBad", "X:Bad", "X\r\nBad", "X\nBad"])
def test_bad_name_refused_every_time(name: str) -> None:
    for _ in range(2):  # a refused name is never remembered as fit
        with pytest.raises(UpstreamError) as err:
            build_head("GET", "/", HeaderList([("Host", "up.com"), (name, "v")]), None)
        assert err.value.status == 502


def test_split_url_remembers_only_the_same_origin() -> None:
    urls = [
        ("http://a.com/x", ("http", "a.com", 80, "/x")),
        ("http://a.com/y?z", ("http", "a.com", 80, "/y?z")),
        ("http://b.com/x", ("http", "b.com", 80, "/x")),
        ("http://b.com:81/x", ("http", "b.com", 81, "/x")),
        ("http://b.com:8/x", ("http", "b.com", 8, "/x")),
        ("https://b.com:8/x", ("https", "b.com", 8, "/x")),
        ("https://b.com:8", ("https", "b.com", 8, "/")),
        ("https://b.com:8?q", ("https", "b.com", 8, "/?q")),
        ("https://b.com:8/?q", ("https", "b.com", 8, "/?q")),
        ("http://A.com/x", ("http", "a.com", 80, "/x")),
        # the last origin followed by more of another authority: not the same upstream
        ("http://a.com/x", ("http", "a.com", 80, "/x")),
        ("http://a.com.evil/x", ("http", "a.com.evil", 80, "/x")),
        ("http://a.com.evil:8080?q", ("http", "a.com.evil", 8080, "/?q")),
        ("http://a.com.evil:8080", ("http", "a.com.evil", 8080, "/")),
        ("http://a.com.evil:8080", ("http", "a.com.evil", 8080, "/")),
        ("http://a.com.evil:8080?r", ("http", "a.com.evil", 8080, "/?r")),
        ("http://a.com.evil:808", ("http", "a.com.evil", 808, "/")),
        ("http://a.com.evil:8080/", ("http", "a.com.evil", 8080, "/")),
    ]
    for _ in range(2):
        for url, split in urls:
            assert split_url(url) == split
    with pytest.raises(ValueError):
        split_url("a.com/x")
    with pytest.raises(ValueError):
        split_url("ftp://a.com/x")
