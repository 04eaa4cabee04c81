"""Real encoded clips for tests and benches: a face photo panning (Debian's ffmpeg CLI),
H.264/HEVC + AAC encoded in memory by PyAV, and either read back as hub packets."""

from __future__ import annotations

import fractions
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from app.media.flv import FlvFileReader, TagType
from app.media.packet import MediaPacket

FACE_PHOTO = Path(__file__).resolve().parents[1] / "data" / "images" / "grace_hopper.jpg"


def face_clip(
    path: Path,
    width: int,
    height: int,
    seconds: float,
    bitrate_kbps: int | None = None,
    gop: int = 60,
    preset: str = "veryfast",
    audio: bool = True,
    still: bool = False,
) -> Path:
    """A 30 fps H.264 (+AAC) FLV of the face photo panning (or held ``still``), with
    film-like noise."""
    x, y = (
        ("(in_w-out_w)/2", "(in_h-out_h)/2")
        if still
        else (
            "(in_w-out_w)/2*(1+sin(t))",
            "(in_h-out_h)/2*(1+cos(t))",
        )
    )
    pan = (
        f"scale={int(width * 1.1) // 2 * 2}:{int(height * 1.1) // 2 * 2},"
        f"crop={width}:{height}:x='{x}':y='{y}',noise=alls=6:allf=t,format=yuv420p"
    )
    inputs = ["-loop", "1", "-framerate", "30", "-i", str(FACE_PHOTO)]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440"]
    rate = ["-b:v", f"{bitrate_kbps}k"] if bitrate_kbps else []
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            *inputs,
            "-t",
            str(seconds),
            "-vf",
            pan,
            "-c:v",
            "libx264",
            "-preset",
            preset,
            *rate,
            "-g",
            str(gop),
            "-bf",
            "0",
            *(["-c:a", "aac"] if audio else []),
            "-f",
            "flv",
            str(path),
        ],
        check=True,
    )
    return path


def gray_frame(index: int, width: int, height: int) -> np.ndarray:
    """A grey, slowly moving background with no saturated colour (the player tests look for
    their danmaku colour in screenshots, so the video must never contain it)."""
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    level = (60 + ((x + y + index * 3) % 96)).astype(np.uint8)
    return np.repeat(level[:, :, None], 3, axis=2)


TONE_RATE = 44100
TONE_SAMPLES = 1024  # one AAC frame


def tone_frame(pts: int) -> av.AudioFrame:
    """One AAC frame's worth of a 440 Hz stereo tone, starting at sample ``pts``."""
    t = (np.arange(TONE_SAMPLES) + pts) / TONE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = TONE_RATE, pts
    return frame


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
            aus = out.add_stream("aac", rate=TONE_RATE)
            aus.layout = "stereo"
        audio_pts = 0
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(draw(i, width, height), format="rgb24")
            vf.pts = i
            vf.time_base = fractions.Fraction(1, fps)
            out.mux(vs.encode(vf))
            while aus is not None and audio_pts < (i + 1) * TONE_RATE / fps:
                out.mux(aus.encode(tone_frame(audio_pts)))
                audio_pts += TONE_SAMPLES
        out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    return sink.getvalue()


def flv_packets(flv: bytes | Path, media_only: bool = False) -> list[MediaPacket]:
    """The tags of an FLV file (its bytes or its path) as hub packets; with ``media_only``
    just the audio and video tags (no script data)."""
    data = flv.read_bytes() if isinstance(flv, Path) else flv
    return [
        MediaPacket.from_tag(tag.kind, tag.timestamp, tag.body)
        for tag in FlvFileReader().feed(data)
        if not media_only or tag.kind in (TagType.AUDIO, TagType.VIDEO)
    ]
