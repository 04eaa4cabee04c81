"""Recordings over REST (start/stop per stream, list, download) and the public VOD files the
web player loads (``/vod/{id}/media``, ``/vod/{id}/regions.jsonl``), like live playback."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response, params
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from app.hub import StreamKey
from app.outputs.record.catalog import Recording
from app.outputs.record.manager import RecordingManager

_MEDIA_TYPES = {".mp4": "video/mp4", ".flv": "video/x-flv"}


class RecordRequest(BaseModel):
    format: Literal["mp4", "flv"] | None = Field(
        default=None,
        description="Container of this stream's recordings (default ROI_RELAY_RECORD_FORMAT)",
    )


def _found(manager: RecordingManager, recording_id: str) -> Recording:
    recording = manager.find(recording_id)
    if recording is None or not recording.media.exists():
        raise HTTPException(status_code=404, detail=f"no recording {recording_id!r}")
    return recording


def _media(recording: Recording) -> FileResponse:
    return FileResponse(
        recording.media,
        media_type=_MEDIA_TYPES.get(recording.media.suffix, "application/octet-stream"),
        filename=f"{recording.app}-{recording.stream}-{recording.id}{recording.media.suffix}",
        content_disposition_type="inline",
    )


def _regions(recording: Recording) -> FileResponse:
    if not recording.sidecar.exists():
        raise HTTPException(status_code=404, detail=f"recording {recording.id!r} has no regions")
    return FileResponse(
        recording.sidecar, media_type="application/jsonl", headers={"Cache-Control": "no-cache"}
    )


def recordings_router(manager: RecordingManager, dependencies: list[params.Depends]) -> APIRouter:
    router = APIRouter(tags=["recordings"])
    api = APIRouter(prefix="/api/v1", dependencies=dependencies)

    @api.post("/streams/{app}/{stream}/record", summary="Record this stream (now if live)")
    async def start(
        app: str, stream: str, body: RecordRequest | None = Body(default=None)
    ) -> dict[str, Any]:
        status = manager.start(StreamKey(app, stream), body.format if body else None)
        return {"app": app, "stream": stream, "enabled": True, "recording": status}

    @api.delete(
        "/streams/{app}/{stream}/record",
        status_code=204,
        summary="Stop recording this stream",
        responses={404: {"description": "Not being recorded"}},
    )
    async def stop(app: str, stream: str) -> Response:
        if not manager.stop(StreamKey(app, stream)):
            raise HTTPException(status_code=404, detail=f"{app}/{stream} is not being recorded")
        return Response(status_code=204)

    @api.get("/recordings", summary="Recorded segments, oldest first")
    def list_recordings(
        app: str | None = Query(None), stream: str | None = Query(None)
    ) -> list[dict[str, Any]]:
        return manager.list(app, stream)

    @api.get("/recordings/{recording_id}", summary="One recorded segment")
    def get_recording(recording_id: str) -> dict[str, Any]:
        return _found(manager, recording_id).as_dict(manager.open_ids())

    @api.get("/recordings/{recording_id}/media", summary="Download the segment")
    def api_media(recording_id: str) -> FileResponse:
        return _media(_found(manager, recording_id))

    @api.get("/recordings/{recording_id}/regions", summary="The segment's ROI sidecar (JSONL)")
    def api_regions(recording_id: str) -> FileResponse:
        return _regions(_found(manager, recording_id))

    router.include_router(api)

    @router.get("/vod/{recording_id}/media", summary="Recorded segment for the web player")
    def vod_media(recording_id: str) -> FileResponse:
        return _media(_found(manager, recording_id))

    @router.get("/vod/{recording_id}/regions.jsonl", summary="ROI sidecar for the web player")
    def vod_regions(recording_id: str) -> FileResponse:
        return _regions(_found(manager, recording_id))

    return router


__all__ = ["recordings_router"]
