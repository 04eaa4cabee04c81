"""A real RtmpServer and Hub on loopback in the test's own event loop (see tests/rtmp/conftest.py
for the fixture that starts them), with what the RTMP tests ask of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.hub import Hub, Stream, StreamKey
from app.rtmp.server import RtmpServer


class Relay:
    def __init__(self, hub: Hub, server: RtmpServer) -> None:
        self.hub = hub
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.server.port}/{path}"

    async def wait_live(self, app: str, name: str, timeout: float = 15.0) -> Stream:
        deadline = time.monotonic() + timeout
        while (stream := self.hub.get(StreamKey(app, name))) is None:
            assert time.monotonic() < deadline, f"{app}/{name} never went live"
            await asyncio.sleep(0.02)
        return stream

    async def wait_gone(self, app: str, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.hub.get(StreamKey(app, name)) is not None:
            assert time.monotonic() < deadline, f"{app}/{name} is still live"
            await asyncio.sleep(0.02)

    def leftovers(self, peer: str) -> list[str]:
        """What the hub and the server still hold for the connection from ``peer``."""
        found = [f"stream {s.key}" for s in self.hub.streams() if s.remote == peer]
        for stream in self.hub.streams():
            found += [
                f"subscription {sub.name} on {stream.key}"
                for sub in stream.output.subscriptions
                if peer in sub.name
            ]
        found += [f"connection {c.peer}" for c in self.server.connections if c.peer == peer]
        return found

    async def wait_released(self, peer: str, timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while left := self.leftovers(peer):
            assert time.monotonic() < deadline, f"left behind by {peer}: {left}"
            await asyncio.sleep(0.02)


StartRelay = Callable[..., Awaitable[Relay]]
