"""What one HTTP client can make the server hold: request bodies and unfinished headers.

* :class:`BodyLimit` (ASGI): a request body larger than its route's limit is answered 413
  without being read whole: at once when ``Content-Length`` says so, else as soon as the
  bytes received pass the limit. Bodies within the limit are read here, before the app runs,
  so a client that goes away in the middle of its body ends its request with a clean close
  (the app never sees a half-read body).
* :func:`guarded_http_protocol`: uvicorn's HTTP protocol with a deadline for the request
  headers (from the connection's start, and again after each response on a kept-alive
  connection) and a cap on their size: a client that trickles or never finishes its headers
  is closed instead of holding a connection (and its buffers) for ever. uvicorn's own
  keep-alive timer is cancelled by any byte received, so it does not bound this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("app.api.limits")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyLimit:
    """ASGI middleware: ``limit_for(path)`` bytes of request body at most, else 413."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone while sending its body: nothing to answer
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def receive_buffered() -> Message:
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, receive_buffered, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"body: larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not read: the connection cannot be reused.
                (b"connection", b"close"),
                (b"access-control-allow-origin", b"*"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def guarded_http_protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a header deadline and a header size cap."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _awaiting_headers = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            was_awaiting = self._awaiting_headers
            super().data_received(data)
            # Counted after parsing: bytes that completed the headers may carry body too.
            if was_awaiting and self._awaiting_headers:
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                    self._refuse(b"431 Request Header Fields Too Large")

        def on_headers_complete(self) -> None:
            self._headers_done()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._headers_done()
            self._awaiting_headers = True
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_done(self) -> None:
            self._awaiting_headers = False
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._awaiting_headers and not self.transport.is_closing():
                log.info(
                    "HTTP client %s: headers not complete in %.0f s", self.client, header_timeout
                )
                self._refuse(b"408 Request Timeout")

        def _refuse(self, status: bytes) -> None:
            self._headers_done()
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            )
            self.transport.close()

    return GuardedHttpProtocol


def body_limits(api_bytes: int, whep_offer_bytes: int) -> Callable[[str], int]:
    """The body limit of a path: WHEP offers have their own, everything else the API's."""

    def limit_for(path: str) -> int:
        return whep_offer_bytes if path.endswith("/whep") else api_bytes

    return limit_for
