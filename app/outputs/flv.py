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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.hub import Hub, StreamKey, Subscription
from app.media.flv import FLV_FILE_HEADER

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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

    def __init__(self, hub: Hub, app: AsgiApp) -> None:
        self.hub = hub
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = FLV_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        stream = self.hub.get(StreamKey(match[1], match[2]))
        if stream is None:
            detail = json.dumps({"detail": f"stream {match[1]}/{match[2]} is not live"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": detail.encode()})
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


async def _close_on_disconnect(receive: Receive, sub: Subscription) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.close()
