"""The player-side routers on a real uvicorn server over a real hub, a hub feeder, and
headless Chromium for the player tests.

The hub is fed directly (packets from real PyAV-encoded FLV), so these tests do not depend
on RTMP ingest; app/server.py composes the same routers in the product.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
import uvicorn
from fastapi import FastAPI

from app.api.hls import hls_router
from app.api.player import player_router
from app.api.roi_feed import roi_feed_router
from app.api.whep import whep_router
from app.hub import Hub, Stream, StreamKey
from app.media.packet import MediaPacket
from app.outputs.flv import HttpFlvPlayback
from app.outputs.hls import HlsService
from app.outputs.webrtc import WhepService
from tests.outputs.media import feed_live
from tests.support.browser import CHROMIUM, chromium

T = TypeVar("T")


class PlayerServer:
    """Hub + HTTP server on their own event loop thread, on a free loopback port."""

    def __init__(
        self, segment_seconds: float = 1.0, window: int = 4, whep_connect_timeout: float = 30.0
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._feeders: list[Future[Stream]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.hub: Hub = self.run(self._make_hub())
        self.hls = HlsService(self.hub, segment_seconds=segment_seconds, window=window)
        self.whep = WhepService(self.hub, connect_timeout=whep_connect_timeout)
        self.app = FastAPI()
        self.app.include_router(roi_feed_router(self.hub))
        self.app.include_router(hls_router(self.hub, service=self.hls))
        self.app.include_router(whep_router(self.hub, service=self.whep))
        self.app.include_router(player_router(self.hub))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            HttpFlvPlayback(self.hub, self.app),
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.run_coroutine_threadsafe(
            self._server.serve(sockets=[sock]), self.loop
        )
        self.run(self._started())

    @staticmethod
    async def _make_hub() -> Hub:
        return Hub()

    async def _started(self) -> None:
        while not self._server.started:
            await asyncio.sleep(0.01)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def feed(
        self, app: str, name: str, packets: Sequence[MediaPacket], realtime: bool = True
    ) -> Future[Stream]:
        """Publishes ``packets`` into the hub at their own pace, then ends the stream."""
        feeder = asyncio.run_coroutine_threadsafe(
            feed_live(self.hub, StreamKey(app, name), packets, realtime), self.loop
        )
        self._feeders.append(feeder)
        return feeder

    def wait_live(self, app: str, name: str, timeout: float = 10) -> None:
        async def until_live() -> None:
            while self.hub.get(StreamKey(app, name)) is None:
                await asyncio.sleep(0.01)

        self.run(asyncio.wait_for(until_live(), timeout))

    def stop(self) -> None:
        async def shutdown() -> None:
            for stream in self.hub.streams():
                stream.close()
            await self.hub.wait_closed()
            self._server.should_exit = True

        for feeder in self._feeders:
            feeder.cancel()
        try:
            self.run(shutdown())
            self._serving.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


@pytest.fixture
def player_server() -> Iterator[PlayerServer]:
    server = PlayerServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed")
    with chromium() as launched:
        yield launched
