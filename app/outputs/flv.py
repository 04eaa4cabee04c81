"""HTTP-FLV: a stream's output track served as one endless FLV file.

Served by a bare ASGI handler in front of the FastAPI app rather than a StreamingResponse:
each packet is a fan-out to every player, so each layer per write counts, and the handler
notices a player leaving (``http.disconnect``) at once and stops queueing for it. Where the
server offers it (:data:`CHUNKED_BODY`, roi-relay's own HTTP protocol does), a hand-over's
tags go to the socket as one chunk without passing through ASGI ``send`` or being copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Generator, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import AccessRequest, Admit, admit_all
from app.hub import Hub, StreamKey, Subscription
from app.media.flv import FLV_FILE_HEADER
from app.media.packet import PacketBatch

FLV_PATH = re.compile(r"^/([^/]+)/([^/]+)\.flv$")
_HEADERS = [
    (b"content-type", b"video/x-flv"),
    (b"cache-control", b"no-cache"),
    (b"access-control-allow-origin", b"*"),
]

CHUNKED_BODY = "roi_relay.chunked_body"
"""ASGI scope extension: ``scope["extensions"][CHUNKED_BODY]["write"]`` is a
:data:`WriteChunk` for this request's response."""

WriteChunk = Callable[[Sequence[bytes]], bool]
"""Writes the parts now as one chunk of the body, or says False when that cannot be (the
response is not started or is over, the client is gone, or writing is paused): the caller then
uses ``send``, which waits where it must. ``send`` costs a message dict, a coroutine and, with
chunked encoding, a copy of the body joined to its chunk header, per player and per write; this
hands the parts to the transport as they are."""


class BodyWriter:
    """Response body writes through ASGI ``send``, started straight from the hub's fan-out.

    An asyncio server's ``send`` returns without suspending while its transport takes data
    (uvicorn awaits only while writing is paused). Stepping it by hand there saves the player
    task a wake-up per packet. When it does suspend, it is resumed when what it waits for is
    done; until then, and while the player task holds packets it took from the queue, the
    subscription queues (``Subscription.direct`` says no): bytes go out in order, and a slow
    player still skips to keyframes.
    """

    def __init__(self, send: Send, write_chunk: WriteChunk | None = None) -> None:
        self._send = send
        self._write_chunk = write_chunk
        self._loop = asyncio.get_running_loop()
        self._unfinished: Generator[Any, None, None] | None = None
        self._finished = asyncio.Event()
        self._task_writing = False
        self.error: BaseException | None = None

    def offer(self, batch: PacketBatch) -> bool:
        """``Subscription.direct``: the batch's tags in one write, now if it can be."""
        if self._unfinished is not None or self._task_writing or self.error is not None:
            return False
        tags = batch.flv_tags()
        if not self._chunk([tags]):
            self._start(tags, True)
        return True

    async def write(self, data: bytes, more: bool = True) -> None:
        """Writes after any unfinished write; raises what the connection raised.

        Called by the player task with what it took from the queue: from the call on (no
        await before it), direct writes wait, so that nothing overtakes ``data``.
        """
        self._task_writing = True
        try:
            await self._wait()
            if self.error is None and not (more and self._chunk([data])):
                self._start(data, more)
                await self._wait()
        finally:
            self._task_writing = False
        if self.error is not None:
            raise self.error

    def _chunk(self, parts: Sequence[bytes]) -> bool:
        return self._write_chunk is not None and self._write_chunk(parts)

    async def _wait(self) -> None:
        while self._unfinished is not None:
            self._finished.clear()
            await self._finished.wait()

    def _start(self, data: bytes, more: bool) -> None:
        body = {"type": "http.response.body", "body": data, "more_body": more}
        self._step(self._send(body).__await__())

    def _step(self, write: Generator[Any, None, None]) -> None:
        try:
            waiting = write.send(None)
        except StopIteration:
            self._end_write()
            return
        except (Exception, asyncio.CancelledError) as exc:  # the connection broke: the task ends
            self.error = exc
            self._end_write()
            return
        self._unfinished = write
        if asyncio.isfuture(waiting):
            # Taken over from a Task: the future must not believe a Task is waiting on it.
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(lambda _done: self._step(write))
        else:  # a bare yield (asyncio.sleep(0)): run again on the next loop pass
            self._loop.call_soon(self._step, write)

    def _end_write(self) -> None:
        if self._unfinished is not None:
            self._unfinished = None
            self._finished.set()


async def write_flv(sub: Subscription, send: Send, write_chunk: WriteChunk | None = None) -> None:
    """The FLV header, then every packet as a tag, until the stream ends or the player goes.

    Packets go out from the hub's fan-out while the connection takes them (``BodyWriter``);
    what queued meanwhile goes out in one write: a player that has fallen behind costs one
    write per wake-up instead of one per packet.
    """
    writer = BodyWriter(send, write_chunk)
    await writer.write(FLV_FILE_HEADER)
    sub.direct = writer.offer
    try:
        while (packet := await sub.get()) is not None:
            packets = [packet]
            while (more := sub.get_nowait()) is not None:
                packets.append(more)
            await writer.write(PacketBatch(packets).flv_tags())
    finally:
        sub.direct = None
    await writer.write(b"", more=False)


class HttpFlvPlayback:
    """ASGI: ``GET /{app}/{stream}.flv`` from the hub; every other request goes to ``app``."""

    def __init__(self, hub: Hub, app: ASGIApp, admit: Admit = admit_all) -> None:
        self.hub = hub
        self.app = app
        self.admit = admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = FLV_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        access = await self.admit(_access_request(scope, match[1], match[2]))
        if not access.ok:
            await _answer(send, 403, f"play refused: {access.reason}")
            return
        try:
            await self._play(scope, receive, send, match[1], match[2])
        finally:
            access.ended()

    async def _play(self, scope: Scope, receive: Receive, send: Send, app: str, name: str) -> None:
        stream = self.hub.get(StreamKey(app, name))
        if stream is None:
            await _answer(send, 404, f"stream {app}/{name} is not live")
            return
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        sub = stream.output.subscribe("http-flv")
        watcher = asyncio.create_task(_close_on_disconnect(receive, sub))
        try:
            await write_flv(sub, send, _chunk_writer(scope))
        except OSError:
            pass  # the player's connection broke mid-write
        finally:
            sub.close()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _chunk_writer(scope: Scope) -> WriteChunk | None:
    extension = scope.get("extensions", {}).get(CHUNKED_BODY)
    return extension.get("write") if isinstance(extension, dict) else None


def _access_request(scope: Scope, app: str, name: str) -> AccessRequest:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    client = scope.get("client")
    return AccessRequest("play", "http-flv", app, name, query, client[0] if client else "")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _close_on_disconnect(receive: Receive, sub: Subscription) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.close()
