"""The ROI feed's WebSocket endpoint, `/{app}/{stream}/roi` (the feed: app/outputs/roi_feed.py)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.hub import Hub, StreamKey
from app.outputs.roi_feed import RoiFeed


def roi_feed_router(hub: Hub) -> APIRouter:
    router = APIRouter(tags=["playback"])

    @router.websocket("/{app}/{stream}/roi")
    async def roi_feed(websocket: WebSocket, app: str, stream: str) -> None:
        """One compact JSON message per encoded frame, from the moment of joining."""
        live = hub.get(StreamKey(app, stream))
        if live is None:
            await websocket.close(code=4404, reason=f"stream {app}/{stream} is not live")
            return
        await websocket.accept()
        try:
            with RoiFeed(live) as feed:
                while (document := await feed.next()) is not None:
                    await websocket.send_text(document)
            await websocket.close(code=1000, reason="stream ended")
        except WebSocketDisconnect:
            pass
        finally:
            with contextlib.suppress(Exception):
                await websocket.close()

    return router
