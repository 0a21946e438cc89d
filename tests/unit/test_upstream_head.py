"""The upstream request head and URL split (kongtx.proxy.upstream_request)."""

from __future__ import annotations

import pytest

from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.headers import HeaderList
from kongtx.proxy.upstream_request import Origin, build_head, origin_end, split_url


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


def test_split_url_with_or_without_the_origin_split_already() -> None:
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
    for url, split in urls:
        assert split_url(url) == split
        # the API's origin, split once: the same answer
        assert split_url(url, Origin(url[: origin_end(url)])) == split
    with pytest.raises(ValueError):
        split_url("a.com/x")
    with pytest.raises(ValueError):
        split_url("ftp://a.com/x")


@pytest.mark.parametrize(
    ("origin", "split"),
    [
        ("http://a.com", ("http", "a.com", 80)),
        ("HTTPS://A.com", ("https", "a.com", 443)),
        ("http://a.com:", ("http", "a.com", 80)),
        ("http://u:p@a.com:81", ("http", "a.com", 81)),
        ("http://[::1]", ("http", "::1", 80)),
        ("https://[::1]:8443", ("https", "::1", 8443)),
    ],
)
def test_origin_split_once(origin: str, split: tuple[str, str, int]) -> None:
    found = Origin(origin)
    assert (found.scheme, found.host, found.port, found.length) == (*split, len(origin))


@pytest.mark.parametrize("origin", ["ftp://a.com", "http://", "http://a.com:x", "a.com"])
def test_origin_of_no_upstream_url(origin: str) -> None:
    with pytest.raises(ValueError):
        Origin(origin)


def test_an_origin_whose_authority_goes_on_is_split_again() -> None:
    """A URL that does not end its authority where the origin does is split in full."""
    origin = Origin("http://a.com")
    assert split_url("http://a.com.evil/x", origin) == ("http", "a.com.evil", 80, "/x")
    assert split_url("http://a.com?q", origin) == ("http", "a.com", 80, "/?q")
    assert split_url("http://a.com", origin) == ("http", "a.com", 80, "/")


@pytest.mark.parametrize(
    ("url", "end"),
    [("http://a/b", 8), ("http://a?b/c", 8), ("http://a#b/c", 8), ("http://a", 8), ("a/b", -1)],
)
def test_origin_end_cuts_as_urlsplit(url: str, end: int) -> None:
    assert origin_end(url) == end
