"""Forwarding destinations per stream: /api/v1/streams/{app}/{stream}/forwards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, params
from pydantic import BaseModel, Field

from app.hub import StreamKey
from app.outputs.forward.manager import ForwardManager
from app.outputs.forward.target import MAX_URL_LENGTH, TargetError


class ForwardRequest(BaseModel):
    url: str = Field(
        description="rtmp:// or rtmps:// URL: rtmp://host[:port]/app/name[?query]; "
        "{app} and {stream} stand for this stream's names",
        max_length=MAX_URL_LENGTH,
        examples=["rtmp://a.rtmp.youtube.com/live2/xxxx-xxxx-xxxx-xxxx"],
    )


def forwards_router(manager: ForwardManager, dependencies: list[params.Depends]) -> APIRouter:
    router = APIRouter(
        prefix="/api/v1/streams/{app}/{stream}/forwards",
        tags=["forwarding"],
        dependencies=dependencies,
    )

    # async: these read and change stream state, which only the event loop touches.
    @router.get("", summary="Destinations of this stream and their status")
    async def list_forwards(app: str, stream: str) -> list[dict[str, Any]]:
        return manager.status(StreamKey(app, stream))

    @router.post(
        "",
        status_code=201,
        summary="Forward this stream to one more destination (now if live)",
        responses={422: {"description": "Bad URL (the detail names what is wrong)"}},
    )
    async def add_forward(app: str, stream: str, body: ForwardRequest) -> dict[str, Any]:
        key = StreamKey(app, stream)
        try:
            target = manager.add(key, body.url)
        except TargetError as exc:
            raise HTTPException(
                status_code=422,
                detail=[{"loc": ["body", "url"], "msg": str(exc), "type": "value_error"}],
            ) from exc
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        return {"url": target.redacted, "forwards": manager.status(key)}

    @router.delete(
        "",
        status_code=204,
        summary="Stop forwarding to the destinations added over REST (all, or ?url=)",
        responses={404: {"description": "No such destination"}},
    )
    async def delete_forwards(app: str, stream: str, url: str | None = Query(None)) -> Response:
        if await manager.remove(StreamKey(app, stream), url) == 0:
            raise HTTPException(status_code=404, detail="no such REST destination")
        return Response(status_code=204)

    return router


__all__ = ["forwards_router"]
