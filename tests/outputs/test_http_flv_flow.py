"""HTTP-FLV writes straight from the hub's fan-out (app/outputs/flv.py ``BodyWriter``): bytes in
order whether a write finishes at once or waits for the connection, and a player that stops
reading is skipped to keyframes without holding up the others."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import pytest

from app.media.flv import FlvFileReader, FlvFileTag, TagType, VideoPacketType, parse_video_tag
from app.media.packet import MediaPacket, PacketBatch
from app.outputs.flv import BodyWriter
from tests.support.http_client import open_get, response_events
from tests.support.rtmp_client import fake_video, publish_fast


@dataclass
class PausingSend:
    """An ASGI ``send`` with uvicorn's flow control: while paused, a write waits for the
    transport to drain before it writes."""

    written: list[bytes] = field(default_factory=list)
    drained: asyncio.Future[None] | None = None

    def pause(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume(self) -> None:
        assert self.drained is not None
        drained, self.drained = self.drained, None
        drained.set_result(None)

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.drained is not None:
            await self.drained
        self.written.append(message["body"])


def packet(ts: int) -> MediaPacket:
    return MediaPacket.from_tag(TagType.VIDEO, ts, fake_video(ts == 0, 10))


def timestamps(chunks: list[bytes]) -> list[int]:
    reader = FlvFileReader()
    reader.feed(b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00")
    return [tag.timestamp for tag in reader.feed(b"".join(chunks))]


async def test_a_waiting_write_holds_back_direct_writes_until_it_is_done() -> None:
    send = PausingSend()
    writer = BodyWriter(send)
    assert writer.offer(PacketBatch([packet(0)]))  # written at once
    send.pause()
    assert writer.offer(PacketBatch([packet(40)]))  # taken, waiting for the drain
    assert not writer.offer(PacketBatch([packet(80)]))  # the subscription must queue this one
    task_write = asyncio.create_task(writer.write(packet(80).flv_tag()))
    await asyncio.sleep(0)
    assert not writer.offer(PacketBatch([packet(120)]))  # the task holds 80: none may overtake
    send.resume()
    await task_write
    assert writer.offer(PacketBatch([packet(160), packet(200)]))
    assert timestamps(send.written) == [0, 40, 80, 160, 200]
    assert len(send.written) == 4, "the packets of one hand-over go out in one body write"


async def test_a_broken_connection_ends_the_writer_with_its_error() -> None:
    async def broken(message: dict[str, Any]) -> None:
        raise OSError("connection reset")

    writer = BodyWriter(broken)
    assert writer.offer(PacketBatch([packet(0)]))  # taken; the error is kept for the player task
    assert not writer.offer(PacketBatch([packet(40)]))
    with pytest.raises(OSError, match="reset"):
        await writer.write(b"")


def read_flv(port: int, name: str, stall: threading.Event | None) -> list[FlvFileTag]:
    """An HTTP-FLV player; with ``stall`` it reads nothing until that is set (with a small
    receive buffer, so the server's writes back up at once), then everything to the end."""
    sock, http = open_get(port, f"/live/{name}.flv", small_buffer=stall is not None)
    if stall is not None:
        assert stall.wait(60)
    reader, tags = FlvFileReader(), []
    with sock:
        for event in response_events(sock, http):
            if isinstance(event, h11.Response):
                assert event.status_code == 200
            else:
                tags += reader.feed(bytes(event.data))
    return tags


def video_frames(tags: list[FlvFileTag]) -> list[tuple[int, bool]]:
    frames = []
    for tag in tags:
        if tag.kind == TagType.VIDEO:
            video = parse_video_tag(tag.body)
            if video.packet_type is VideoPacketType.CODED_FRAMES:
                frames.append((tag.timestamp, video.keyframe))
    return frames


async def test_a_player_that_stops_reading_skips_to_keyframes_and_slows_nobody(
    relay_factory,
) -> None:
    running = relay_factory(player_queue_seconds=0.5)
    rtmp_port, http_port = running.relay.rtmp_port, running.relay.http_port
    frames, size = 400, 100_000  # 40 MB: far beyond what socket buffers absorb
    go, stall = threading.Event(), threading.Event()
    publisher = asyncio.create_task(
        asyncio.to_thread(publish_fast, rtmp_port, "flowflv", frames, size, go)
    )
    async with httpx.AsyncClient(base_url=running.http_url) as api:

        async def status() -> dict[str, Any]:
            while (reply := await api.get("/api/v1/streams/live/flowflv")).status_code != 200:
                await asyncio.sleep(0.02)
            return reply.json()

        await status()
        stuck = asyncio.create_task(asyncio.to_thread(read_flv, http_port, "flowflv", stall))
        healthy = asyncio.create_task(asyncio.to_thread(read_flv, http_port, "flowflv", None))
        while (await status())["players"] < 2:
            await asyncio.sleep(0.01)
        go.set()
        assert await publisher < 20
    stall.set()
    fluent, skipped = video_frames(await healthy), video_frames(await stuck)
    assert len(fluent) >= 60
    for frames_seen in (fluent, skipped):
        stamps = [ts for ts, _ in frames_seen]
        assert stamps == sorted(set(stamps)), "tags out of order or repeated"
        assert frames_seen[0][1], "playback starts on a keyframe"
        # Wherever frames were dropped, playback resumes on a keyframe.
        for (before, _), (after, keyframe) in zip(frames_seen, frames_seen[1:], strict=False):
            assert after - before == 40 or keyframe, (before, after)
    # The stuck player was skipped ahead (frames dropped, counted), not buffered whole.
    assert len(skipped) < frames
    metrics = httpx.get(f"{running.http_url}/metrics").text
    dropped = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("roi_relay_dropped_frames_total ")
    )
    assert dropped > 0
