"""HTTP-FLV: a stream's output track served as one endless FLV file.

Served by a bare ASGI handler in front of the FastAPI app rather than a StreamingResponse:
each packet is a fan-out to every player, so each layer per write counts, and the handler
notices a player leaving (``http.disconnect``) at once and stops queueing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import AccessRequest, Admit, admit_all
from app.hub import Hub, StreamKey, Subscription
from app.media.flv import FLV_FILE_HEADER

FLV_PATH = re.compile(r"^/([^/]+)/([^/]+)\.flv$")
_HEADERS = [
    (b"content-type", b"video/x-flv"),
    (b"cache-control", b"no-cache"),
    (b"access-control-allow-origin", b"*"),
]


async def write_flv(sub: Subscription, send: Send) -> None:
    """The FLV header, then every packet as a tag, until the stream ends or the player goes.

    Whatever is queued goes out in one write: a player that has fallen behind costs one
    write per wake-up instead of one per packet.
    """
    await send({"type": "http.response.body", "body": FLV_FILE_HEADER, "more_body": True})
    while (packet := await sub.get()) is not None:
        more = sub.get_nowait()
        if more is None:
            body = packet.flv_tag()
        else:
            parts = [packet.flv_tag(), more.flv_tag()]
            while (more := sub.get_nowait()) is not None:
                parts.append(more.flv_tag())
            body = b"".join(parts)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class HttpFlvPlayback:
    """ASGI: ``GET /{app}/{stream}.flv`` from the hub; every other request goes to ``app``."""

    def __init__(self, hub: Hub, app: ASGIApp, admit: Admit = admit_all) -> None:
        self.hub = hub
        self.app = app
        self.admit = admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = FLV_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        access = await self.admit(_access_request(scope, match[1], match[2]))
        if not access.ok:
            await _answer(send, 403, f"play refused: {access.reason}")
            return
        try:
            await self._play(scope, receive, send, match[1], match[2])
        finally:
            access.ended()

    async def _play(self, scope: Scope, receive: Receive, send: Send, app: str, name: str) -> None:
        stream = self.hub.get(StreamKey(app, name))
        if stream is None:
            await _answer(send, 404, f"stream {app}/{name} is not live")
            return
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        sub = stream.output.subscribe("http-flv")
        watcher = asyncio.create_task(_close_on_disconnect(receive, sub))
        try:
            await write_flv(sub, send)
        except OSError:
            pass  # the player's connection broke mid-write
        finally:
            sub.close()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _access_request(scope: Scope, app: str, name: str) -> AccessRequest:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    client = scope.get("client")
    return AccessRequest("play", "http-flv", app, name, query, client[0] if client else "")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _close_on_disconnect(receive: Receive, sub: Subscription) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.close()
