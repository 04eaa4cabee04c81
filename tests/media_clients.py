"""Real media clients for end-to-end tests: PyAV (FFmpeg) publishers and players."""

from __future__ import annotations

import fractions
import time
from dataclasses import dataclass, field

import av
import numpy as np


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """A moving test pattern whose frame index is readable back from the top-left block."""
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (x + index * 4) & 0xFF
    img[..., 1] = (y + index * 2) & 0xFF
    img[..., 2] = ((x ^ y) + index) & 0xFF
    img[:16, :16] = (index * 37) & 0xFF
    return img


@dataclass
class PushResult:
    video_frames: int = 0
    audio_frames: int = 0


def push(
    url: str,
    seconds: float = 2.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    codec: str = "libx264",
    audio: bool = True,
    realtime: bool = True,
    gop: int | None = None,
    frames: list[np.ndarray] | None = None,
    options: dict[str, str] | None = None,
) -> PushResult:
    """Publishes H.264 (or HEVC) + AAC over RTMP with PyAV; `frames` overrides the pattern."""
    result = PushResult()
    n_frames = len(frames) if frames is not None else int(seconds * fps)
    with av.open(url, "w", format="flv", options=options or {}) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = gop or n_frames + 1
        vs.codec_context.options = {"bf": "0"}
        if codec == "libx264":
            vs.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        if codec == "libx265":
            vs.codec_context.options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=44100)
            aus.layout = "stereo"
        start = time.monotonic()
        samples_per_frame = 1024
        audio_pts = 0
        for i in range(n_frames):
            img = frames[i] if frames is not None else pattern_frame(i, width, height)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            vf.time_base = fractions.Fraction(1, fps)
            for packet in vs.encode(vf):
                out.mux(packet)
            result.video_frames += 1
            if aus is not None:
                while audio_pts < (i + 1) * 44100 / fps:
                    t = (np.arange(samples_per_frame) + audio_pts) / 44100
                    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                    af = av.AudioFrame.from_ndarray(
                        np.stack([tone, tone]), format="fltp", layout="stereo"
                    )
                    af.sample_rate = 44100
                    af.pts = audio_pts
                    for packet in aus.encode(af):
                        out.mux(packet)
                    audio_pts += samples_per_frame
                    result.audio_frames += 1
            if realtime:
                delay = start + (i + 1) / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        for packet in vs.encode(None):
            out.mux(packet)
        if aus is not None:
            for packet in aus.encode(None):
                out.mux(packet)
    return result


@dataclass
class PlayResult:
    video_frames: int = 0
    audio_frames: int = 0
    video_dts: list[int] = field(default_factory=list)
    keyframe_first: bool = False
    width: int = 0
    height: int = 0
    codec: str = ""
    sei: list[bytes] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def play(
    url: str,
    timeout: float = 20.0,
    keep_images: bool = False,
    max_frames: int | None = None,
    fmt: str | None = None,
) -> PlayResult:
    """Reads a live URL to its end with PyAV, decoding every packet."""
    result = PlayResult()
    options = {"rw_timeout": str(int(timeout * 1_000_000)), "analyzeduration": "500000"}
    with av.open(url, "r", format=fmt, options=options, timeout=timeout) as container:
        vstreams = container.streams.video
        if vstreams:
            vstreams[0].codec_context.options = {"export_side_data": ""}
        first = True
        for packet in container.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                if first:
                    result.keyframe_first = packet.is_keyframe
                    first = False
                result.video_dts.append(int(packet.dts * packet.time_base * 1000))
                for frame in packet.decode():
                    result.video_frames += 1
                    result.width, result.height = frame.width, frame.height
                    for sd in frame.side_data:
                        if "SEI_UNREGISTERED" in str(sd.type):
                            result.sei.append(bytes(sd))
                    if keep_images:
                        result.images.append(frame.to_ndarray(format="rgb24"))
                result.codec = packet.stream.codec_context.name
                if max_frames is not None and result.video_frames >= max_frames:
                    break
            elif packet.stream.type == "audio":
                for _ in packet.decode():
                    result.audio_frames += 1
    return result
