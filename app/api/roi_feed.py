"""The ROI feed's WebSocket endpoint, `/{app}/{stream}/roi` (the feed: app/outputs/roi_feed.py)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api.access import WS_REFUSED, play_request
from app.auth import Admit, admit_all
from app.hub import Hub, StreamKey
from app.outputs.roi_feed import RoiFeed


def roi_feed_router(hub: Hub, admit: Admit = admit_all) -> APIRouter:
    router = APIRouter(tags=["playback"])

    @router.websocket("/{app}/{stream}/roi")
    async def roi_feed(websocket: WebSocket, app: str, stream: str) -> None:
        """One compact JSON message per encoded frame, from the moment of joining."""
        access = await admit(play_request("roi-ws", app, stream, websocket))
        if not access.ok:
            # Accepted first: a close before the handshake becomes a bare HTTP 403 without
            # the code and reason a player can read.
            await websocket.accept()
            await websocket.close(code=WS_REFUSED, reason=f"play refused: {access.reason}"[:120])
            return
        try:
            await _feed(websocket, app, stream)
        finally:
            access.ended()

    async def _feed(websocket: WebSocket, app: str, stream: str) -> None:
        live = hub.get(StreamKey(app, stream))
        if live is None:
            await websocket.close(code=4404, reason=f"stream {app}/{stream} is not live")
            return
        await websocket.accept()
        # A listener that leaves is noticed at once, not at the next region document (which
        # on a stream without ROI never comes): the feed ends with whichever finishes first.
        leaving = asyncio.create_task(_until_disconnect(websocket))
        try:
            with RoiFeed(live) as feed:
                sending = asyncio.create_task(_send_all(websocket, feed))
                await asyncio.wait({sending, leaving}, return_when=asyncio.FIRST_COMPLETED)
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    ended = await sending
                    if ended:
                        await websocket.close(code=1000, reason="stream ended")
        except WebSocketDisconnect:
            pass
        finally:
            leaving.cancel()
            with contextlib.suppress(Exception):
                await websocket.close()

    return router


async def _send_all(websocket: WebSocket, feed: RoiFeed) -> bool:
    """Sends every document; True once the stream has ended."""
    while (document := await feed.next()) is not None:
        await websocket.send_text(document)
    return True


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
