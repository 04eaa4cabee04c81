"""Clips with a real face for tests and benches, made with the Debian ffmpeg CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


def flv_packets(path: Path) -> list[MediaPacket]:
    """The audio and video tags of an FLV file as hub packets."""
    return [
        MediaPacket.from_tag(tag.kind, tag.timestamp, tag.body)
        for tag in FlvFileReader().feed(path.read_bytes())
        if tag.kind in (TagType.AUDIO, TagType.VIDEO)
    ]
