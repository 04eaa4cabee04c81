"""Playback on the HTTP port: HTTP-FLV and the per-frame ROI feed."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from app.api.streams import find_stream
from app.hub import Hub, StreamKey
from app.media.flv import TagType
from app.outputs.flv import flv_body


def playback_router(hub: Hub) -> APIRouter:
    router = APIRouter(tags=["playback"])

    @router.get(
        "/{app}/{stream}.flv",
        summary="HTTP-FLV playback",
        response_class=StreamingResponse,
        responses={200: {"content": {"video/x-flv": {}}}, 404: {"description": "Not live"}},
    )
    async def play_flv(app: str, stream: str) -> StreamingResponse:
        live = find_stream(hub, app, stream)
        sub = live.output.subscribe("http-flv")
        return StreamingResponse(
            flv_body(sub),
            media_type="video/x-flv",
            headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
        )

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
