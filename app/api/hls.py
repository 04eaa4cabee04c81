"""HLS playback URLs: /{app}/{stream}.m3u8 and its segments."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response

from app.api.access import refusal
from app.api.hls_access import SESSION_PARAM, HlsViewers, multivariant
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
    viewers: HlsViewers | None = None,
) -> APIRouter:
    """Routes for HLS; ``segment_seconds``/``window`` come from Settings.hls_segment_seconds
    and Settings.hls_window. With ``viewers`` each playback session is admitted once
    (app/api/hls_access.py)."""
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
    async def playlist(app: str, stream: str, request: Request) -> Response:
        key = StreamKey(app, stream)
        token = request.query_params.get(SESSION_PARAM)
        suffix = ""
        if viewers is not None:
            if token is None:
                return await _new_viewer(viewers, app, stream, request)
            if not viewers.valid(token, key):
                raise HTTPException(status_code=403, detail=_BAD_SESSION, headers=_NO_CACHE)
            suffix = f"?{SESSION_PARAM}={token}"
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
            return f"{base}/{segment.sequence}.ts{suffix}"

        return Response(session.playlist.render(uri), media_type=PLAYLIST_TYPE, headers=_NO_CACHE)

    @router.get(
        "/{app}/{stream}/hls/{token}/{sequence}.ts",
        summary="HLS segment (MPEG-TS)",
        response_class=Response,
        responses={200: {"content": {SEGMENT_TYPE: {}}}, 404: {"description": "Gone"}},
    )
    def segment(app: str, stream: str, token: str, sequence: int, request: Request) -> Response:
        key = StreamKey(app, stream)
        if viewers is not None and not viewers.valid(request.query_params.get(SESSION_PARAM), key):
            raise HTTPException(status_code=403, detail=_BAD_SESSION, headers=_NO_CACHE)
        found = hls.segment(key, token, sequence)
        if found is None:
            raise HTTPException(
                status_code=404, detail=f"segment {sequence} of {app}/{stream} is not available"
            )
        return Response(
            found.data,
            media_type=SEGMENT_TYPE,
            headers={"Cache-Control": "max-age=60", "Access-Control-Allow-Origin": "*"},
        )

    async def _new_viewer(viewers: HlsViewers, app: str, stream: str, request: Request) -> Response:
        live = hub.get(StreamKey(app, stream))
        if viewers.full:
            raise HTTPException(
                status_code=503,
                detail=f"too many HLS viewer sessions (limit {viewers.max_sessions})",
                headers={**_NO_CACHE, "Retry-After": "5"},
            )
        token, access = await viewers.open(app, stream, request)
        if token is None:
            raise refusal(access, _NO_CACHE)
        if live is None:
            viewers.end(token)
            raise HTTPException(status_code=404, detail=f"stream {app}/{stream} is not live")
        bitrate, _fps = live.rates()
        media = f"{quote(stream, safe='')}.m3u8?{SESSION_PARAM}={token}"
        body = multivariant(media, int(bitrate) or 1_000_000)
        return Response(body, media_type=PLAYLIST_TYPE, headers=_NO_CACHE)

    return router


_BAD_SESSION = (
    f"{SESSION_PARAM}: no such HLS playback session for this stream (expired, or for another "
    "stream): open the stream's .m3u8 URL again"
)
