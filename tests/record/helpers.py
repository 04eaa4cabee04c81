"""Reading recordings back with FFmpeg (ffprobe) and PyAV, and waiting for them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import httpx

from app.media.sei import roi_json_from_frame


def probe_frames(path: Path) -> dict[str, int]:
    """Frames FFmpeg decodes, per stream type."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {s["codec_type"]: int(s.get("nb_read_frames", 0)) for s in json.loads(out)["streams"]}


def sei_by_pts(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(presentation ms, ROI SEI document) of every decoded video frame."""
    frames: list[tuple[int, dict[str, Any] | None]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            doc = roi_json_from_frame(frame)
            assert frame.pts is not None
            frames.append(
                (
                    round(float(frame.pts * stream.time_base) * 1000),
                    json.loads(doc) if doc else None,
                )
            )
    return frames


def sidecar(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def wait_recordings(
    base: str, stream: str, *, count: int = 1, complete: bool = True, timeout: float = 20
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = httpx.get(f"{base}/api/v1/recordings", params={"stream": stream}, timeout=5).json()
        if len(found) >= count and (not complete or all(r["state"] == "complete" for r in found)):
            return found
        time.sleep(0.1)
    raise AssertionError(f"recordings of {stream}: {found}")
