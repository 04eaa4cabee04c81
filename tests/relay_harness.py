"""A real relay on free loopback ports, run on its own event loop thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from app.config import Settings
from app.server import Relay

T = TypeVar("T")


class RunningRelay:
    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        settings = Settings(
            host="127.0.0.1",
            rtmp_port=0,
            http_port=0,
            data_dir=data_dir,
            log_level="warning",
            **overrides,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.relay: Relay = self.call(self._make, settings)
        self.run(self.relay.start())

    @staticmethod
    def _make(settings: Settings) -> Relay:
        return Relay(settings)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs fn on the relay's loop (the hub is loop-bound) and returns its result."""
        fut: Future[T] = Future()

        def invoke() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return fut.result(30)

    @property
    def hub(self) -> Any:
        return self.relay.hub

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
