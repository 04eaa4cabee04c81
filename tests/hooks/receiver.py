"""A real HTTP receiver for callbacks and the auth hook: a small ASGI app on uvicorn, run on
its own thread, recording every POST it gets and answering as the test tells it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

# (path, body) -> (status, answer: JSON, or raw bytes as they are, delay in seconds)
Answer = tuple[int, dict[str, Any] | bytes, float]
Behaviour = Callable[[str, dict[str, Any]], Answer]


def always_ok(_path: str, _body: dict[str, Any]) -> Answer:
    return 200, {"code": 0}, 0.0


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    at: float  # time.monotonic()


@dataclass
class Receiver:
    behaviour: Behaviour = always_ok
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks) or b"{}")
        self.received.append(Received(scope["path"], body, time.monotonic()))
        status, answer, delay = self.behaviour(scope["path"], body)
        if delay:
            await asyncio.sleep(delay)
        payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in list(self.received) if path is None or r.path == path]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"receiver never saw it: {self.received!r}"
            time.sleep(0.05)


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/dead"
