"""Live stream stats, kicking publishers, application-supplied regions: /api/v1/streams.

A stream's document (:class:`StreamInfo`) is composed here from the hub's figures
(:class:`app.hub.StreamStats`) and the ROI stage's account (:class:`app.roi.status.RoiStatus`);
neither of them knows this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Response, params
from pydantic import BaseModel, Field, field_validator

from app.hub import Hub, Stream, StreamKey
from app.roi.controller import RoiController
from app.roi.regions import MAX_STRING_BYTES, check_roi_request, format_roi, parse_roi
from app.roi.status import TEMPLATE_QUERY, RoiStatus, initial_status, template_name


class RoiOverride(BaseModel):
    roi: str = Field(
        description=(
            "Regions `Top,Left-Bottom,Right=DeltaQp;...` (strings longer than "
            f"{MAX_STRING_BYTES} bytes are truncated; malformed parts are skipped). "
            "`Clear` or `;` means normal encoding; a string with no valid region otherwise "
            "is refused."
        ),
        max_length=4096,
        examples=["80,560-300,760=-6"],
    )

    @field_validator("roi")
    @classmethod
    def _has_a_region_or_clears(cls, value: str) -> str:
        check_roi_request(value)
        return value


class RoiOverrideResult(BaseModel):
    roi: str = Field(
        description="The regions that take effect, in canonical form (the picture rules and "
        "the template's max_regions applied)"
    )
    regions: int = Field(description="How many regions take effect")


class RoiInfo(BaseModel):
    """The ROI stage's account of one stream."""

    template: str | None = Field(description="The template the push names, if any")
    model: str | None = Field(description="The recognition model running (None: none)")
    applied: bool = Field(description="ROI-encoded frames are going out")
    reason: str = Field(description="Why the stream is (or is not) ROI-encoded, in words")
    regions: int = Field(description="Regions in the last encoded frame")
    detect_ms: float = Field(description="Duration of the last detection pass")
    detect_every: int = Field(description="Frames between detection passes (0: no model runs)")
    encode_ms: float = Field(description="Encode time of the last frame")
    lag_ms: float = Field(description="How far the transcoder is behind ingest")
    degraded: str | None = Field(description="Which degradation step is in force, if any")
    decoder: str | None = Field(
        description="The decoder the ROI stage runs (h264, h264_cuvid, ...) while applied"
    )
    decoder_fallback: str | None = Field(
        description="Why NVDEC did not open when ROI_RELAY_DECODER=cuda asked for it"
    )
    encoder: str | None = Field(
        description="The encoder the ROI stage runs (h264_nvenc, libx264, ...) while applied"
    )
    encoder_fallback: str | None = Field(
        description="Why NVENC did not open when it was asked for (or auto), if it did not"
    )
    providers: list[str] | None = Field(
        description="The recognition model's onnxruntime execution providers, in order"
    )
    corrupt_gops: int = Field(
        description="GOPs relayed plain because a frame in them did not decode"
    )

    @classmethod
    def of(cls, status: RoiStatus) -> RoiInfo:
        stats = status.stats
        return cls(
            template=status.template,
            model=status.model,
            applied=status.applied,
            reason=status.reason,
            regions=stats.regions,
            detect_ms=round(stats.detect_ms, 2),
            detect_every=stats.detect_every,
            encode_ms=round(stats.encode_ms, 2),
            lag_ms=round(stats.lag_ms, 1),
            degraded=stats.degraded,
            # What ran last is kept in the stats; it is only the stream's while ROI applies.
            decoder=stats.decoder if status.applied else None,
            decoder_fallback=stats.decoder_fallback if status.applied else None,
            encoder=stats.encoder if status.applied else None,
            encoder_fallback=stats.encoder_fallback if status.applied else None,
            providers=list(stats.providers)
            if status.applied and stats.providers is not None
            else None,
            corrupt_gops=stats.corrupt_gops,
        )


class StreamInfo(BaseModel):
    """One live stream."""

    app: str
    stream: str
    remote: str = Field(description="The publisher's address")
    codec: str | None = Field(description="Video codec FourCC (avc1, hvc1, ...)")
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None = Field(description="Measured over the last seconds, else as declared")
    bitrate_kbps: float = Field(description="Incoming bitrate over the last seconds")
    players: int
    uptime_s: float
    bytes_in: int
    dropped_frames: int = Field(description="Video frames skipped for players that fell behind")
    template: str | None = Field(description=f"The push URL's `{TEMPLATE_QUERY}` template")
    roi: RoiInfo
    warnings: list[str] = Field(description="What the publisher should change, in words")
    recording: dict[str, Any] | None = Field(
        default=None,
        description="Its recording: enabled, state (off, recording, waiting, stopped, failed), "
        "session, segments, bytes, dropped_frames, error, current segment id",
    )
    forwards: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Forwarding destinations: url, state, connected, bytes, reconnects, "
        "dropped_frames, last_error",
    )

    @classmethod
    def of(cls, stream: Stream, roi: RoiStatus) -> StreamInfo:
        stats = stream.stats()
        return cls(
            app=stream.key.app,
            stream=stream.key.name,
            remote=stats.remote,
            codec=stats.video_codec,
            audio_codec=stats.audio_codec,
            width=stats.width,
            height=stats.height,
            fps=round(stats.fps, 2) if stats.fps is not None else None,
            bitrate_kbps=round(stats.bitrate_bps / 1000, 1),
            players=stats.players,
            uptime_s=round(stats.uptime_s, 1),
            bytes_in=stats.bytes_in,
            dropped_frames=stats.dropped_frames,
            template=template_name(stream.query),
            roi=RoiInfo.of(roi),
            warnings=list(stats.warnings),
        )


def find_stream(hub: Hub, app: str, stream: str) -> Stream:
    found = hub.get(StreamKey(app, stream))
    if found is None:
        raise HTTPException(status_code=404, detail=f"stream {app}/{stream} is not live")
    return found


def streams_router(
    hub: Hub,
    roi: RoiController | None,
    dependencies: list[params.Depends],
    outputs: Callable[[Stream], dict[str, Any]] | None = None,
) -> APIRouter:
    """``roi`` None: no ROI stage runs (the streams then show the status they start with).
    ``outputs`` adds the recording and forwarding sections of a stream's document."""
    router = APIRouter(prefix="/api/v1/streams", tags=["streams"], dependencies=dependencies)
    not_live: dict[int | str, dict[str, Any]] = {404: {"description": "Stream not live"}}

    def info(stream: Stream) -> StreamInfo:
        status = roi.status(stream) if roi is not None else initial_status(stream.query)
        document = StreamInfo.of(stream, status)
        return document.model_copy(update=outputs(stream)) if outputs is not None else document

    # async: handlers run on the event loop, the only thread that reads stream state.
    @router.get("", summary="Live streams with their stats")
    async def list_streams() -> list[StreamInfo]:
        return [info(s) for s in hub.streams()]

    @router.get("/{app}/{stream}", summary="One live stream", responses=not_live)
    async def get_stream(app: str, stream: str) -> StreamInfo:
        return info(find_stream(hub, app, stream))

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
        regions = await roi.set_override(live, parse_roi(body.roi))
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
