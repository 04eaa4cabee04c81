"""The web player: /play/{app}/{stream} and its static files under /player/."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from app.hub import Hub

PLAYER_DIR = Path(__file__).resolve().parent.parent / "web" / "player"
_ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}


def player_router(hub: Hub, player_dir: Path = PLAYER_DIR) -> APIRouter:
    """The page works out app and stream from its own URL, so one static page serves all
    streams; ``hub`` is taken for symmetry with the other playback routers (the page itself
    shows "not live" rather than the server answering 404, so a page opened before the
    publisher starts begins playing when it does)."""
    del hub
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

    @router.get("/player/{name}", summary="Player asset", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no player file {name!r}")
        return FileResponse(
            path, media_type=_ASSET_TYPES[path.suffix], headers={"Cache-Control": "no-cache"}
        )

    return router
