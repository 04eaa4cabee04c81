"""roi-relay's HTTP protocol (app/api/http_protocol.py): the chunked-body extension writes
valid HTTP/1.1 chunks straight to a real uvicorn connection, says no while writing is paused
or the response is not open, and never where a response is not chunked."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import pytest
import uvicorn

from app.api.http_protocol import http_protocol
from app.outputs.flv import CHUNKED_BODY, WriteChunk
from tests.support.http_client import open_get, response_events

COUNT = 16_000
Asgi = Callable[[dict[str, Any], Any, Any], Any]


async def serve(app: Asgi) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", http=http_protocol(5.0, 8192))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


def fetch(port: int, path: str, method: str = "GET", stall: float = 0.0) -> tuple[int, bytes]:
    """A real HTTP/1.1 client: the status and the whole body, read after ``stall`` seconds
    with a small receive buffer so that the server's writes back up."""
    sock, http = open_get(port, path, method, small_buffer=True)
    time.sleep(stall)
    status, body = 0, []
    with sock:
        for event in response_events(sock, http):
            if isinstance(event, h11.Response):
                status = event.status_code
            else:
                body.append(bytes(event.data))
    return status, b"".join(body)


def extension(scope: dict[str, Any]) -> WriteChunk:
    write = scope["extensions"][CHUNKED_BODY]["write"]
    assert callable(write)
    return write  # type: ignore[no-any-return]


@pytest.fixture
async def chunked_server() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    seen: dict[str, Any] = {"refused": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        write = extension(scope)
        seen["before_start"] = write([b"too early"])
        if scope["path"] == "/sized":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"5")],
                }
            )
            seen["sized"] = write([b"hello"])
            await send({"type": "http.response.body", "body": b"hello"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(COUNT):  # 1 KiB each, in two parts: far more than socket buffers hold
            parts = [b"%04d" % i, bytes([65 + i % 26]) * 1020]
            if not write(parts):
                seen["refused"] += 1  # paused: send waits for the drain
                await send(
                    {"type": "http.response.body", "body": b"".join(parts), "more_body": True}
                )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen["after_end"] = write([b"too late"])

    async for port in serve(app):
        yield port, seen


async def test_chunks_written_by_the_extension_arrive_whole_and_in_order(
    chunked_server: tuple[int, dict[str, Any]],
) -> None:
    port, seen = chunked_server
    status, body = await asyncio.to_thread(fetch, port, "/endless", stall=0.5)
    assert status == 200
    expected = b"".join(b"%04d" % i + bytes([65 + i % 26]) * 1020 for i in range(COUNT))
    assert body == expected
    assert seen["before_start"] is False
    assert seen["after_end"] is False
    # The client read nothing for half a second: writing paused, and the extension said so.
    assert 0 < seen["refused"] < COUNT


async def test_the_extension_never_writes_into_a_response_that_is_not_chunked(
    chunked_server: tuple[int, dict[str, Any]],
) -> None:
    port, seen = chunked_server
    status, body = await asyncio.to_thread(fetch, port, "/sized")
    assert (status, body) == (200, b"hello")
    assert seen["sized"] is False
