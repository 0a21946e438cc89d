"""What the upstream client sends: the URL split, the request head, the body producer.

Part of the pooled upstream client (:mod:`kongtx.proxy.upstream`).  The head is
built in one piece with the client's own framing (``Content-Length`` or chunked);
a spooled request body is streamed from its file with backpressure, a body of
unknown length framed chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from kongtx.proxy.errors import UpstreamError
from kongtx.proxy.headers import HeaderList

#: Request headers the client never forwards itself: it frames the body it sends.
_FRAMING: Final = frozenset({"content-length", "transfer-encoding"})

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: Characters a header name sent upstream must not contain (checked in C, per name).
_NAME_FORBIDDEN: Final = frozenset(" \t\r\n:")

BODY_CHUNK: Final = 64 * 1024


@implementer(IBodyProducer)
class FileBodyProducer:
    """Streams a (spooled) request body upstream, obeying the transport's backpressure.

    Synchronous reads of a local spool file are what nginx does too; each reactor
    turn writes until the transport says "pause", so memory stays flat.
    """

    def __init__(self, body: IO[bytes], length: int, on_progress: Callable[[], None]) -> None:
        self.length = length
        self._body = body
        self._on_progress = on_progress
        self._consumer: IConsumer | None = None
        self._paused = False
        self._stopped = False
        self._sent = 0
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        self._pump()
        return self._done

    def _pump(self) -> None:
        consumer = self._consumer
        done = self._done
        if consumer is None or done is None:
            return
        while not self._paused and not self._stopped and self._sent < self.length:
            data = self._body.read(min(BODY_CHUNK, self.length - self._sent))
            if not data:
                self._stopped = True
                done.errback(Failure(OSError("request body ended early")))
                return
            self._sent += len(data)
            consumer.write(data)
            self._on_progress()
        if self._sent >= self.length and not self._stopped:
            self._stopped = True
            done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._pump()

    def stopProducing(self) -> None:
        self._stopped = True


class ChunkedWriter:
    """Frames each write as one HTTP/1.1 chunk (a streamed body of unknown length)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        if data:
            self._transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])


# ------------------------------------------------------------------------- URLs


class Origin:
    """``scheme://authority`` of an upstream URL, split: where the client connects.

    Split once per API (:class:`kongtx.proxy.request.ApiTarget`, when the router is
    built); each request's URL starts with it, so the client only cuts the request
    target off that URL (:func:`split_url`).
    """

    __slots__ = ("host", "length", "port", "scheme")

    def __init__(self, origin: str) -> None:
        """Raises ValueError: not an http(s) origin (no host, a port that is no number)."""
        scheme, _, authority = origin.partition("://")
        scheme = scheme.lower()
        hostport = authority.rsplit("@", 1)[-1]
        default = 443 if scheme == "https" else 80
        if hostport.startswith("["):
            end = hostport.find("]")
            host = hostport[1:end]
            rest = hostport[end + 1 :]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:] else default
        elif ":" in hostport:
            host, _, raw_port = hostport.partition(":")
            port = int(raw_port) if raw_port else default
        else:
            host, port = hostport, default
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"not an upstream URL: {origin!r}")
        self.scheme: str = scheme
        self.host: str = host.lower()
        self.port: int = port
        #: ``len(origin)``: where the request target starts in a URL of this origin
        self.length: int = len(origin)


def origin_end(url: str) -> int:
    """Where ``scheme://authority`` of an absolute URL ends (its path, query or fragment
    starts; ``len(url)`` when it has none), as ``urlsplit`` cuts the netloc; -1 when the
    URL has no ``://``."""
    start = url.find("://")
    if start < 0:
        return -1
    end = len(url)
    for sep in _AFTER_AUTHORITY:
        at = url.find(sep, start + 3, end)
        if at >= 0:
            end = at
    return end


#: what ends a URL's authority
_AFTER_AUTHORITY: Final = ("/", "?", "#")


def split_url(url: str, origin: Origin | None = None) -> tuple[str, str, int, str]:
    """``(scheme, host, port, request target)`` of an absolute http(s) URL.

    ``origin``: the URL's upstream, split already (the API's, :class:`Origin`): only the
    request target is cut off here, as long as the authority ends where the origin
    does.  Raises ValueError for a URL that is no http(s) URL.
    """
    if origin is not None:
        n = origin.length
        if n == len(url):
            return origin.scheme, origin.host, origin.port, "/"
        after = url[n]
        if after == "/":
            return origin.scheme, origin.host, origin.port, url[n:]
        if after == "?" or after == "#":
            return origin.scheme, origin.host, origin.port, "/" + url[n:]
    cut = origin_end(url)
    if cut < 0:
        raise ValueError(f"not an upstream URL: {url!r}")
    found = Origin(url[:cut])
    target = url[cut:]
    if not target.startswith("/"):
        target = "/" + target
    return found.scheme, found.host, found.port, target


#: header name -> whether it is sent (``False``: framing the client sets itself), for
#: the names found fit to send upstream (no space, tab, CR, LF or colon): one lookup
#: per header instead of a check of each character (bounded: cleared when full)
_SENT_NAMES: Final[dict[str, bool]] = {}


def _check_name(low: str, name: str) -> bool:
    """Whether a header ``name`` (lower-case ``low``) is sent; raises if it must not be."""
    if not name or not _NAME_FORBIDDEN.isdisjoint(name):
        raise UpstreamError(502, f"invalid header for the upstream: {name!r}")
    if len(_SENT_NAMES) >= 4096:
        _SENT_NAMES.clear()
    sent = _SENT_NAMES[name] = low not in _FRAMING
    return sent


def build_head(
    method: str, target: str, headers: HeaderList, length: int | None, chunked: bool = False
) -> bytes:
    """The request line and headers, framed by ``length`` (``None``: no body) or chunked.

    Raises:
        UpstreamError: a CR or LF in a header (a plugin must not be able to
            smuggle a second request upstream).
    """
    parts = [method, " ", target, " HTTP/1.1\r\n"]
    for item in headers._items:
        name = item[1]
        sent = _SENT_NAMES.get(name)
        if sent is None:
            sent = _check_name(item[0], name)
        if not sent:
            continue
        value = item[2]
        if "\r" in value or "\n" in value:
            raise UpstreamError(502, f"invalid header for the upstream: {name!r}")
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    if chunked:
        parts.append("Transfer-Encoding: chunked\r\n")
    elif length is not None:
        parts.append(f"Content-Length: {length}\r\n")
    elif method in _BODY_METHODS:
        parts.append("Content-Length: 0\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")
