"""Recordings over REST (start/stop per stream, list, download) and the VOD files the web
player loads (``/vod/{id}/media``, ``/vod/{id}/regions.jsonl``), under the same play
signature as the recorded stream's live playback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, params
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from app.auth import AccessRequest, Gate
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


def recordings_router(
    manager: RecordingManager,
    dependencies: list[params.Depends],
    gate: Gate | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """``gate``: the play signature rule the VOD files are under (None: open)."""
    router = APIRouter(tags=["recordings"])

    def playable(recording_id: str, request: Request) -> Recording:
        # The recorded stream's play signature, as its live playback needs (the operator's
        # auth hook is not asked: a player fetches the file in many range requests).
        recording = _found(manager, recording_id)
        if gate is not None:
            client = request.client.host if request.client else ""
            query = dict(request.query_params)
            ask = AccessRequest("play", "vod", recording.app, recording.stream, query, client)
            verdict = gate.check(ask, clock())
            if not verdict.ok:
                raise HTTPException(status_code=403, detail=verdict.reason)
        return recording

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

    signed: dict[int | str, dict[str, Any]] = {
        403: {"description": "Play signature missing, wrong or expired"}
    }

    @router.get(
        "/vod/{recording_id}/media", summary="Recorded segment for the web player", responses=signed
    )
    def vod_media(recording_id: str, request: Request) -> FileResponse:
        return _media(playable(recording_id, request))

    @router.get(
        "/vod/{recording_id}/regions.jsonl",
        summary="ROI sidecar for the web player",
        responses=signed,
    )
    def vod_regions(recording_id: str, request: Request) -> FileResponse:
        return _regions(playable(recording_id, request))

    return router


__all__ = ["recordings_router"]
