"""A real upstream for the e2e proxy tests, run as its own process.

Listens on 127.0.0.1 (free ports chosen by the OS) for HTTP, HTTPS (self-signed;
records the SNI it was offered) and WebSocket, then prints one JSON line
``{"http": port, "https": port, "ws": port}`` and serves until killed.

Routes (any method):

* anything else: echo ``{"method", "path", "query", "uri", "headers": [[name, value]...],
  "body" (utf-8, first 64 kB), "body_length", "body_sha256", "sni", "connection"}``
  where ``connection`` is a per-connection serial (to observe keep-alive reuse);
* ``/stream?size=N&chunk=M``: N bytes of ``x`` in chunks of M, no Content-Length;
* ``/fixed?size=N``: N bytes with a Content-Length;
* ``/stall?seconds=S``: wait S seconds before answering;
* ``/stall-body?seconds=S``: headers (Content-Length 10) and 5 bytes, wait S, then the rest;
* ``/cut``: Content-Length 100, 10 bytes, then the connection is closed;
* ``/status/<code>[?reason=R]``: that status (and reason phrase), with an ``X-Upstream`` header;
* ``/stats``: ``{"aborted": n}``: responses whose client went away before they finished;
* ``/seen``: ``[[method, uri, body length], ...]`` of the last 1000 requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import endpoints, reactor, ssl
from twisted.web import resource, server

STATS = {"aborted": 0, "connections": 0}
#: every request line seen (method, uri, body length), newest last, bounded
SEEN: list[list[Any]] = []


def _cert() -> tuple[bytes, bytes]:
    sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
    from kongtx.proxy.tls import generate_self_signed

    return generate_self_signed("upstream.test")


def _serial(channel: Any) -> int:
    serial = getattr(channel, "_echo_serial", None)
    if serial is None:
        STATS["connections"] += 1
        serial = channel._echo_serial = STATS["connections"]
    return int(serial)


class Echo(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> Any:
        uri = request.uri.decode("latin-1")
        parts = urlsplit(uri)
        path = parts.path
        args = dict(parse_qsl(parts.query))
        if path != "/seen":
            content = request.content
            content.seek(0, 2)
            size = content.tell()
            content.seek(0)
            SEEN.append([request.method.decode(), uri, size])
            del SEEN[:-1000]
        if path == "/seen":
            return self._json(request, SEEN)
        if path == "/stats":
            return self._json(request, STATS)
        if path == "/stream":
            return self._stream(
                request, int(args.get("size", "0")), int(args.get("chunk", "65536"))
            )
        if path == "/fixed":
            size = int(args.get("size", "0"))
            request.setHeader(b"Content-Length", b"%d" % size)
            return self._stream(request, size, 65536)
        if path == "/stall":
            reactor.callLater(float(args.get("seconds", "5")), self._answer, request)
            return server.NOT_DONE_YET
        if path == "/stall-body":
            request.setHeader(b"Content-Length", b"10")
            request.write(b"12345")
            reactor.callLater(float(args.get("seconds", "5")), self._finish_later, request)
            return server.NOT_DONE_YET
        if path == "/cut":
            request.setHeader(b"Content-Length", b"100")
            request.write(b"0123456789")
            reactor.callLater(0.05, request.channel.transport.abortConnection)
            return server.NOT_DONE_YET
        if path.startswith("/status/"):
            reason = args.get("reason")
            request.setResponseCode(
                int(path.rsplit("/", 1)[1]), None if reason is None else reason.encode("latin-1")
            )
            request.setHeader(b"X-Upstream", b"yes")
            return b"from upstream"
        self._answer(request)
        return server.NOT_DONE_YET

    def _finish_later(self, request: Any) -> None:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(b"67890")
            request.finish()

    def _answer(self, request: Any) -> None:
        if getattr(request, "_disconnected", False):
            STATS["aborted"] += 1
            return
        body = request.content.read()
        uri = request.uri.decode("latin-1")
        parts = urlsplit(uri)
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        sni = None
        handle = getattr(request.channel.transport, "getHandle", None)
        if handle is not None:
            try:
                raw = handle().get_servername()
                sni = raw.decode() if raw else None
            except Exception:
                sni = None
        data = {
            "method": request.method.decode(),
            "path": parts.path,
            "query": parts.query,
            "uri": uri,
            "headers": headers,
            "body": body[:65536].decode("utf-8", "replace"),
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "sni": sni,
            "connection": _serial(request.channel),
        }
        request.setHeader(b"Server", b"echo-upstream")
        request.write(self._json(request, data))
        request.finish()

    def _json(self, request: Any, value: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(value).encode()

    def _stream(self, request: Any, size: int, chunk: int) -> Any:
        block = b"x" * chunk
        state = {"left": size}

        class Producer:
            def resumeProducing(self) -> None:
                if state["left"] <= 0:
                    return
                n = min(chunk, state["left"])
                state["left"] -= n
                request.write(block[:n])
                if state["left"] <= 0:
                    request.unregisterProducer()
                    request.finish()

            def pauseProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                STATS["aborted"] += 1
                state["left"] = 0

        request.registerProducer(Producer(), False)
        return server.NOT_DONE_YET


def _ws_thread(ready: dict[str, int], event: threading.Event) -> None:
    import websockets.asyncio.server as ws_server

    async def echo(conn: Any) -> None:
        async for message in conn:
            await conn.send(message)

    async def main() -> None:
        async with ws_server.serve(echo, "127.0.0.1", 0) as srv:
            ready["ws"] = next(iter(srv.sockets)).getsockname()[1]
            event.set()
            await asyncio.Future()

    asyncio.run(main())


def main() -> None:
    site = server.Site(Echo())
    site.log = lambda request: None  # type: ignore[method-assign]
    ports: dict[str, int] = {}

    cert_pem, key_pem = _cert()
    options = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
    ctx = options.getContext()
    # Accept any SNI, so that the test can read which one was offered.
    ctx.set_tlsext_servername_callback(lambda conn: None)
    options.getContext = lambda: ctx  # type: ignore[method-assign]

    ready = threading.Event()
    threading.Thread(target=_ws_thread, args=(ports, ready), daemon=True).start()

    def started() -> None:
        d1 = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        d2 = endpoints.SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1").listen(site)

        def report(results: Any) -> None:
            ports["http"] = results[0].getHost().port
            ports["https"] = results[1].getHost().port
            ready.wait(10)
            sys.stdout.write(json.dumps(ports) + "\n")
            sys.stdout.flush()

        from twisted.internet.defer import gatherResults

        gatherResults([d1, d2]).addCallback(report)

    reactor.callWhenRunning(started)
    reactor.run()


if __name__ == "__main__":
    main()
