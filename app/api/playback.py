"""The per-frame ROI feed on the HTTP port (HTTP-FLV itself is app/outputs/flv.py)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.hub import Hub, StreamKey
from app.media.flv import TagType


def playback_router(hub: Hub) -> APIRouter:
    router = APIRouter(tags=["playback"])

    @router.websocket("/{app}/{stream}/roi")
    async def roi_feed(websocket: WebSocket, app: str, stream: str) -> None:
        """One compact JSON message per encoded frame, from the moment of joining."""
        live = hub.get(StreamKey(app, stream))
        if live is None:
            await websocket.close(code=4404, reason=f"stream {app}/{stream} is not live")
            return
        await websocket.accept()
        sub = live.output.subscribe("roi-feed")
        while sub.get_nowait() is not None:  # the cached GOP is the past: start live
            pass
        try:
            while (packet := await sub.get()) is not None:
                if packet.kind is TagType.VIDEO and packet.roi is not None:
                    await websocket.send_text(packet.roi)
            await websocket.close(code=1000, reason="stream ended")
        except WebSocketDisconnect:
            pass
        finally:
            sub.close()
            with contextlib.suppress(Exception):
                await websocket.close()

    return router
