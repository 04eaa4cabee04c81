"""A real relay on free loopback ports, run on its own event loop thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.cli import event_loop_factory
from app.config import Settings
from app.server import Relay

T = TypeVar("T")


def create_template(base: str, name: str, **fields: object) -> dict[str, Any]:
    """Creates an ROI template over the REST API of the relay at ``base``."""
    reply = httpx.post(f"{base}/api/v1/roi-templates", json={"name": name, **fields}, timeout=10)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


class RunningRelay:
    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        defaults: dict[str, Any] = {
            "host": "127.0.0.1",
            "rtmp_port": 0,
            "http_port": 0,
            "data_dir": data_dir,
            "log_level": "warning",
        }
        self.settings = Settings(**{**defaults, **overrides})
        self._start()

    def _start(self) -> None:
        # The loop `roi-relay serve` would run (uvloop by default), so tests see what it sees.
        make_loop = event_loop_factory(self.settings.event_loop) or asyncio.new_event_loop
        self.loop = make_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.relay: Relay = self.run(self._build(self.settings))
        self.run(self.relay.start())

    def restart(self, down_s: float = 0.0) -> None:
        """Stops the relay and starts a new one on the same ports and data (like a restart
        of the service); every connection to it breaks meanwhile."""
        ports = {"rtmp_port": self.relay.rtmp_port, "http_port": self.relay.http_port}
        self.stop()
        time.sleep(down_s)
        self.settings = self.settings.model_copy(update=ports)
        self._start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _build(settings: Settings) -> Relay:
        return Relay(settings)  # on the relay's own loop, like `roi-relay serve`

    def stream_info(self, app: str, name: str, timeout: float = 15) -> dict[str, Any]:
        """``GET /api/v1/streams/{app}/{name}`` once the stream is live and its video
        sequence header has arrived (so its size is known)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.http_url, timeout=5) as client:
            while time.monotonic() < deadline:
                reply = client.get(f"/api/v1/streams/{app}/{name}")
                if reply.status_code == 200 and reply.json()["width"]:
                    return reply.json()
                time.sleep(0.05)
        raise AssertionError(f"{app}/{name} never went live")

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.relay.rtmp_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.http_port}"

    def stop(self) -> None:
        try:
            self.run(self.relay.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
