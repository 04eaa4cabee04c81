"""Live stream stats and kicking publishers: /api/v1/streams."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, params

from app.hub import Hub, Stream, StreamKey


def find_stream(hub: Hub, app: str, stream: str) -> Stream:
    found = hub.get(StreamKey(app, stream))
    if found is None:
        raise HTTPException(status_code=404, detail=f"stream {app}/{stream} is not live")
    return found


def streams_router(hub: Hub, dependencies: list[params.Depends]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/streams", tags=["streams"], dependencies=dependencies)

    @router.get("", summary="Live streams with their stats")
    def list_streams() -> list[dict[str, Any]]:
        return [s.info() for s in hub.streams()]

    @router.get(
        "/{app}/{stream}",
        summary="One live stream",
        responses={404: {"description": "Stream not live"}},
    )
    def get_stream(app: str, stream: str) -> dict[str, Any]:
        return find_stream(hub, app, stream).info()

    @router.delete(
        "/{app}/{stream}",
        status_code=204,
        summary="Kick the publisher",
        responses={404: {"description": "Stream not live"}},
    )
    async def kick_stream(app: str, stream: str) -> Response:
        find_stream(hub, app, stream).kick()
        return Response(status_code=204)

    return router
