"""HLS playback URLs: /{app}/{stream}.m3u8 and its segments."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Response

from app.hub import Hub, StreamKey
from app.outputs.hls import HlsSegment, HlsService

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
_NO_CACHE = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}


def hls_router(
    hub: Hub,
    segment_seconds: float = 1.0,
    window: int = 6,
    ready_timeout: float = 15.0,
    service: HlsService | None = None,
) -> APIRouter:
    """Routes for HLS; ``segment_seconds``/``window`` come from Settings.hls_segment_seconds
    and Settings.hls_window."""
    hls = service or HlsService(hub, segment_seconds=segment_seconds, window=window)
    router = APIRouter(tags=["playback"])

    @router.get(
        "/{app}/{stream}.m3u8",
        summary="HLS media playlist",
        response_class=Response,
        responses={
            200: {"content": {PLAYLIST_TYPE: {}}},
            404: {"description": "Not live"},
            503: {"description": "Not enough segments yet (no keyframes within the wait)"},
        },
    )
    async def playlist(app: str, stream: str) -> Response:
        key = StreamKey(app, stream)
        session = hls.session(key)
        if session is None:
            raise HTTPException(status_code=404, detail=f"stream {key} is not live")
        if not await session.wait_ready(ready_timeout):
            raise HTTPException(
                status_code=503,
                detail=f"stream {key} has too few HLS segments yet (keyframes too far apart)",
                headers={"Retry-After": "2"},
            )
        base = f"{quote(stream, safe='')}/hls/{session.token}"

        def uri(segment: HlsSegment) -> str:
            return f"{base}/{segment.sequence}.ts"

        return Response(session.playlist.render(uri), media_type=PLAYLIST_TYPE, headers=_NO_CACHE)

    @router.get(
        "/{app}/{stream}/hls/{token}/{sequence}.ts",
        summary="HLS segment (MPEG-TS)",
        response_class=Response,
        responses={200: {"content": {SEGMENT_TYPE: {}}}, 404: {"description": "Gone"}},
    )
    def segment(app: str, stream: str, token: str, sequence: int) -> Response:
        found = hls.segment(StreamKey(app, stream), token, sequence)
        if found is None:
            raise HTTPException(
                status_code=404, detail=f"segment {sequence} of {app}/{stream} is not available"
            )
        return Response(
            found.data,
            media_type=SEGMENT_TYPE,
            headers={"Cache-Control": "max-age=60", "Access-Control-Allow-Origin": "*"},
        )

    return router
