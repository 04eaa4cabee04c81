"""Play admission for the HTTP playback routes (HLS, WHEP, the ROI WebSocket)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from app.auth import Access, AccessRequest


def play_request(protocol: str, app: str, stream: str, connection: HTTPConnection) -> AccessRequest:
    client = connection.client
    return AccessRequest(
        "play", protocol, app, stream, dict(connection.query_params), client.host if client else ""
    )


def refusal(access: Access, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=403, detail=f"play refused: {access.reason}", headers=headers)


# The ROI WebSocket's refusal (HTTP 403 in the WebSocket close-code range).
WS_REFUSED = 4403
