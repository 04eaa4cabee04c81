"""Hub packets for output tests: per-frame ROI JSON set on the packet and carried in SEI,
a feeder that publishes them live, and a drifting white "face" to find in screenshots.
The clips themselves come from tests/support/clips.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from app.hub import Hub, Stream, StreamKey
from app.media.flv import TagType, VideoPacketType, parse_video_tag
from app.media.packet import MediaPacket
from app.media.sei import add_roi_sei
from app.roi.regions import Region, roi_json
from tests.support.clips import gray_frame


def frame_pts(packet: MediaPacket) -> int:
    return packet.timestamp + parse_video_tag(packet.payload).composition_time


def with_roi(
    packets: Sequence[MediaPacket],
    regions_for: Callable[[int], Sequence[Region]],
    width: int,
    height: int,
    codec: str = "h264",
) -> list[MediaPacket]:
    """Each video frame gets the ROI JSON of ``regions_for(frame index)`` on the packet and
    in an SEI before its first slice, the way the ROI transcoder sends it."""
    out = []
    index = 0
    for packet in packets:
        tag = parse_video_tag(packet.payload) if packet.kind is TagType.VIDEO else None
        if tag is not None and tag.packet_type is VideoPacketType.CODED_FRAMES:
            document = roi_json(
                frame_pts(packet), width, height, "roitest", "LiveShows", regions_for(index)
            )
            body = packet.payload[: tag.data_offset] + add_roi_sei(
                packet.payload[tag.data_offset :],
                codec,
                document,  # type: ignore[arg-type]
            )
            packet = replace(packet, payload=body, roi=document)
            index += 1
        out.append(packet)
    return out


async def feed_live(
    hub: Hub,
    key: StreamKey,
    packets: Sequence[MediaPacket],
    realtime: bool = True,
    on_open: Callable[[Stream], None] | None = None,
) -> Stream:
    """Publishes ``packets`` on ``key`` at their own pace, then ends the stream (on the
    hub's loop)."""
    stream = hub.open_publisher(key, {}, "test-feeder")
    if on_open is not None:
        on_open(stream)
    media = [p for p in packets if not p.sequence_header and p.kind is not TagType.DATA]
    headers = [p for p in packets if p.sequence_header or p.kind is TagType.DATA]
    start = time.monotonic()
    try:
        for header in headers:
            stream.source.push(header)
        for packet in media:
            if realtime:
                delay = start + packet.timestamp / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            stream.source.push(packet)
    finally:
        stream.close()
    return stream


def face_box(index: int, width: int = 320, height: int = 240) -> Region:
    """A 64x64 "face" drifting one pixel per frame (so a region one frame off shows)."""
    left = 40 + index % (width - 120)
    top = 60 + (index // 2) % (height - 140)
    return Region(top, left, top + 64, left + 64, -6, "face", 0.93)


def face_frame(index: int, width: int, height: int) -> np.ndarray:
    """The grey background with a white block where ``face_box`` says the face is."""
    img = gray_frame(index, width, height)
    box = face_box(index, width, height)
    img[box.top : box.bottom, box.left : box.right] = 250
    return img
