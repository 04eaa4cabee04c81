"""The in-process relay fixture of the RTMP tests (tests/support/rtmp_relay.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.config import Settings
from app.hub import Hub
from app.rtmp.server import RtmpServer
from tests.support.rtmp_relay import Relay, StartRelay


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    """Starts relays from Settings overrides (``play_wait_seconds``: how long a play of a
    stream not yet live waits); all are closed at teardown."""
    servers: list[RtmpServer] = []

    async def start(play_wait_seconds: float = 2.0, **overrides: Any) -> Relay:
        settings = Settings(**overrides)
        hub = Hub(
            player_queue_seconds=settings.player_queue_seconds,
            takeover=settings.publisher_takeover,
            stale_seconds=settings.publisher_stale_seconds,
        )
        server = RtmpServer(hub, settings, play_wait_seconds=play_wait_seconds)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return Relay(hub, server)

    yield start
    for server in servers:
        await server.close()
