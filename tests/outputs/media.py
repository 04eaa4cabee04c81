"""Real encoded media for output tests: H.264/AAC encoded by PyAV into FLV, read back as
hub packets, optionally with per-frame ROI JSON set on the packet and carried in SEI."""

from __future__ import annotations

import asyncio
import fractions
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import av
import numpy as np

from app.hub import Hub, Stream, StreamKey
from app.media.flv import FlvFileReader, TagType, VideoPacketType, parse_video_tag
from app.media.packet import MediaPacket
from app.media.sei import add_roi_sei
from app.roi.regions import Region, roi_json


def gray_frame(index: int, width: int, height: int) -> np.ndarray:
    """A grey, slowly moving background with no saturated colour (the player tests look for
    their danmaku colour in screenshots, so the video must never contain it)."""
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    level = (60 + ((x + y + index * 3) % 96)).astype(np.uint8)
    return np.repeat(level[:, :, None], 3, axis=2)


def encode_flv(
    seconds: float = 3.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    gop: int | None = None,
    audio: bool = True,
    draw: Callable[[int, int, int], np.ndarray] = gray_frame,
    codec: str = "libx264",
) -> bytes:
    """An FLV file of H.264 (or HEVC) without B-frames, plus AAC, encoded by PyAV."""
    sink = io.BytesIO()
    frames = int(seconds * fps)
    with av.open(sink, "w", format="flv") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = gop or fps
        vs.codec_context.max_b_frames = 0
        if codec == "libx264":
            vs.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        else:
            vs.codec_context.options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=44100)
            aus.layout = "stereo"
        audio_pts = 0
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(draw(i, width, height), format="rgb24")
            vf.pts = i
            vf.time_base = fractions.Fraction(1, fps)
            out.mux(vs.encode(vf))
            while aus is not None and audio_pts < (i + 1) * 44100 / fps:
                t = (np.arange(1024) + audio_pts) / 44100
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(
                    np.stack([tone, tone]), format="fltp", layout="stereo"
                )
                af.sample_rate = 44100
                af.pts = audio_pts
                out.mux(aus.encode(af))
                audio_pts += 1024
        out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    return sink.getvalue()


def flv_packets(data: bytes) -> list[MediaPacket]:
    return [MediaPacket.from_tag(t.kind, t.timestamp, t.body) for t in FlvFileReader().feed(data)]


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
