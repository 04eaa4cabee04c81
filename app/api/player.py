"""The web player: /play/{app}/{stream} and its static files under /player/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from app.hub import Hub, Stream, StreamKey

PLAYER_DIR = Path(__file__).resolve().parent.parent / "web" / "player"
_ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}


# Refusal reasons (HubCounters.refused) in a viewer's words.
_REFUSALS = {
    "auth": "its push signature (txSecret/txTime) was wrong or had expired, or the operator's "
    "auth hook refused it"
}
MAX_REMEMBERED_ENDS = 1000


class PlayerStreamState(BaseModel):
    """Whether a stream plays now and, when it does not, why (for the waiting page)."""

    live: bool
    state: Literal["live", "not-live", "ended", "refused"]
    why: str
    since_s: float | None = None


def _ago(seconds: float) -> str:
    if seconds < 2:
        return "just now"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


class _StreamHistory:
    """When each stream last ended (bounded), beside the hub's record of refused pushes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ended: dict[StreamKey, float] = {}
        hub.on_stream_closed.append(self._closed)

    def _closed(self, stream: Stream) -> None:
        self.ended.pop(stream.key, None)
        self.ended[stream.key] = time.time()
        while len(self.ended) > MAX_REMEMBERED_ENDS:
            del self.ended[next(iter(self.ended))]

    def state(self, key: StreamKey) -> PlayerStreamState:
        if self.hub.get(key) is not None:
            return PlayerStreamState(live=True, state="live", why="live")
        now = time.time()
        ended = self.ended.get(key)
        refused = self.hub.counters.last_refusals.get(key)
        if refused is not None and (ended is None or refused[0] >= ended):
            at, reason = refused
            because = _REFUSALS.get(reason, reason)
            return PlayerStreamState(
                live=False,
                state="refused",
                why=f"the relay refused the last push to {key} {_ago(now - at)}: {because}",
                since_s=round(now - at, 1),
            )
        if ended is not None:
            return PlayerStreamState(
                live=False,
                state="ended",
                why=f"the stream ended {_ago(now - ended)}",
                since_s=round(now - ended, 1),
            )
        return PlayerStreamState(
            live=False, state="not-live", why=f"not live yet: nobody is pushing to {key}"
        )


def player_router(hub: Hub, player_dir: Path = PLAYER_DIR) -> APIRouter:
    """The page works out app and stream from its own URL, so one static page serves all
    streams. A page opened before the publisher starts says why nothing plays (from
    ``/play/{app}/{stream}/status``, polled once a second) and begins playing when it does."""
    history = _StreamHistory(hub)
    router = APIRouter(tags=["player"])
    assets = {p.name: p for p in player_dir.iterdir() if p.suffix in _ASSET_TYPES}

    @router.get(
        "/play/{app}/{stream}",
        summary="Web player (WHEP, HLS fallback) with region overlay, danmaku and blur",
        response_class=HTMLResponse,
    )
    def page(app: str, stream: str) -> FileResponse:
        return FileResponse(
            player_dir / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    @router.get(
        "/play/{app}/{stream}/status",
        summary="Whether the stream plays now and, if not, why (the waiting player polls it)",
        response_model=PlayerStreamState,
    )
    def status(app: str, stream: str) -> PlayerStreamState:
        return history.state(StreamKey(app, stream))

    @router.get("/player/{name}", summary="Player asset", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no player file {name!r}")
        return FileResponse(
            path, media_type=_ASSET_TYPES[path.suffix], headers={"Cache-Control": "no-cache"}
        )

    return router
