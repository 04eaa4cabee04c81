"""Playback URLs on the HTTP port: /{app}/{stream}.flv (HTTP-FLV)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.streams import find_stream
from app.hub import Hub
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

    return router
