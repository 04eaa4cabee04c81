"""What one HTTP client can make the server hold with its request body.

:class:`BodyLimit` (ASGI): a request body larger than its route's limit is answered 413
without being read whole: at once when ``Content-Length`` says so, else as soon as the bytes
received pass the limit. Bodies within the limit are read here, before the app runs, so a
client that goes away in the middle of its body ends its request with a clean close (the app
never sees a half-read body). Unfinished headers are bounded by the HTTP protocol itself
(:mod:`app.api.http_protocol`).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def body_limits(api_bytes: int, whep_offer_bytes: int) -> Callable[[str], int]:
    """The body limit of a path: WHEP offers have their own, everything else the API's."""

    def limit_for(path: str) -> int:
        return whep_offer_bytes if path.endswith("/whep") else api_bytes

    return limit_for
