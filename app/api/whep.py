"""WHEP (WebRTC-HTTP Egress Protocol): POST an SDP offer, get an answer; DELETE to stop."""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCPeerConnection
from fastapi import APIRouter, HTTPException, Request, Response

from app.api.access import play_request, refusal
from app.auth import Admit, admit_all
from app.hub import Hub, StreamKey
from app.outputs.webrtc import WhepError, WhepService

SDP_TYPE = "application/sdp"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch",
}


def _end_with(pc: RTCPeerConnection, ended: Callable[[], None]) -> None:
    """Calls ``ended`` (the play stop) once the session's peer connection is over."""

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            ended()


def whep_router(
    hub: Hub, service: WhepService | None = None, admit: Admit = admit_all
) -> APIRouter:
    whep = service or WhepService(hub)
    router = APIRouter(tags=["playback"])

    @router.post(
        "/{app}/{stream}/whep",
        summary="WebRTC playback (WHEP): SDP offer in, SDP answer out",
        status_code=201,
        response_class=Response,
        openapi_extra={
            "requestBody": {"required": True, "content": {SDP_TYPE: {"schema": {"type": "string"}}}}
        },
        responses={
            201: {"content": {SDP_TYPE: {}}, "description": "Answer; Location names the session"},
            400: {"description": "Not an SDP offer this server can answer"},
            404: {"description": "Not live"},
            413: {"description": "Offer larger than ROI_RELAY_WHEP_MAX_OFFER_BYTES"},
            415: {"description": "Body is not application/sdp"},
            422: {"description": "Stream video is not H.264"},
            429: {"description": "Too many offers or players from this address"},
            503: {"description": "Too many WebRTC players"},
        },
    )
    async def offer(app: str, stream: str, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != SDP_TYPE:
            raise HTTPException(
                status_code=415, detail=f"body: Content-Type must be {SDP_TYPE}", headers=_CORS
            )
        # The size limit is BodyLimit's (app/api/limits.py), in front of the app.
        body = await request.body()
        try:
            sdp = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(
                status_code=400, detail="body: SDP offer is not UTF-8", headers=_CORS
            ) from None
        client = request.client.host if request.client is not None else ""
        access = await admit(play_request("whep", app, stream, request))
        if not access.ok:
            raise refusal(access, _CORS)
        try:
            session, answer = await whep.create(StreamKey(app, stream), sdp, client)
        except WhepError as exc:
            access.ended()
            headers = dict(_CORS)
            if exc.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            raise HTTPException(
                status_code=exc.status, detail=exc.detail, headers=headers
            ) from None
        _end_with(session.pc, access.ended)
        location = f"/{app}/{stream}/whep/{session.id}"
        return Response(
            answer,
            status_code=201,
            media_type=SDP_TYPE,
            headers={**_CORS, "Location": location, "ETag": f'"{session.id}"'},
        )

    @router.delete(
        "/{app}/{stream}/whep/{session_id}",
        summary="Stop a WHEP session",
        status_code=200,
        response_class=Response,
        responses={404: {"description": "No such session"}},
    )
    async def stop(app: str, stream: str, session_id: str) -> Response:
        session = whep.sessions.get(session_id)
        if session is None or session.key != StreamKey(app, stream):
            raise HTTPException(
                status_code=404, detail=f"no WHEP session {session_id} on {app}/{stream}"
            )
        await whep.delete(session_id)
        return Response(status_code=200, headers=_CORS)

    @router.patch(
        "/{app}/{stream}/whep/{session_id}",
        summary="Trickle ICE (not supported: candidates go in the offer)",
        status_code=405,
        response_class=Response,
    )
    async def trickle(app: str, stream: str, session_id: str) -> Response:
        # WHEP lets a server refuse trickle ICE; clients then send complete offers.
        return Response(status_code=405, headers={**_CORS, "Allow": "DELETE"})

    @router.options("/{app}/{stream}/whep", include_in_schema=False)
    @router.options("/{app}/{stream}/whep/{session_id}", include_in_schema=False)
    async def preflight() -> Response:
        return Response(status_code=204, headers=_CORS)

    return router
