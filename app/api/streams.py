"""Live stream stats, kicking publishers, application-supplied regions: /api/v1/streams."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, params
from pydantic import BaseModel, Field

from app.hub import Hub, Stream, StreamKey
from app.roi.pipeline import RoiController
from app.roi.regions import MAX_STRING_BYTES, effective_regions, format_roi


class RoiOverride(BaseModel):
    roi: str = Field(
        description=(
            "Regions `Top,Left-Bottom,Right=DeltaQp;...` (reference rules; strings longer than "
            f"{MAX_STRING_BYTES} bytes are truncated). `Clear` or `;` means normal encoding."
        ),
        max_length=4096,
        examples=["80,560-300,760=-6"],
    )


class RoiOverrideResult(BaseModel):
    roi: str = Field(description="The regions that take effect, in canonical form")
    regions: int


def find_stream(hub: Hub, app: str, stream: str) -> Stream:
    found = hub.get(StreamKey(app, stream))
    if found is None:
        raise HTTPException(status_code=404, detail=f"stream {app}/{stream} is not live")
    return found


def streams_router(
    hub: Hub, roi: RoiController | None, dependencies: list[params.Depends]
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/streams", tags=["streams"], dependencies=dependencies)
    not_live = {404: {"description": "Stream not live"}}

    @router.get("", summary="Live streams with their stats")
    def list_streams() -> list[dict[str, Any]]:
        return [s.info() for s in hub.streams()]

    @router.get("/{app}/{stream}", summary="One live stream", responses=not_live)
    def get_stream(app: str, stream: str) -> dict[str, Any]:
        return find_stream(hub, app, stream).info()

    @router.delete(
        "/{app}/{stream}", status_code=204, summary="Kick the publisher", responses=not_live
    )
    async def kick_stream(app: str, stream: str) -> Response:
        find_stream(hub, app, stream).kick()
        return Response(status_code=204)

    if roi is None:
        return router

    @router.put(
        "/{app}/{stream}/roi",
        summary="Regions supplied by the application (held until changed)",
        responses=not_live,
    )
    async def put_roi(app: str, stream: str, body: RoiOverride) -> RoiOverrideResult:
        live = find_stream(hub, app, stream)
        regions = roi.set_override(live, body.roi)
        width, height = live.codec.width, live.codec.height
        if width and height:  # show what takes effect on this picture
            regions = effective_regions(regions, width, height)
        return RoiOverrideResult(roi=format_roi(regions), regions=len(regions))

    @router.delete(
        "/{app}/{stream}/roi",
        status_code=204,
        summary="Drop application regions: back to the template's recognition model",
        responses=not_live,
    )
    async def delete_roi(app: str, stream: str) -> Response:
        roi.clear_override(find_stream(hub, app, stream))
        return Response(status_code=204)

    return router
