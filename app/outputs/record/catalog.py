"""What is on disk: recordings (segments) under ``<root>/<app>/<stream>/<session>/``.

A segment ``00003.mp4`` of session ``20261201T140000Z-1a2b3c`` has the id
``20261201T140000Z-1a2b3c-00003``; beside it ``00003.roi.jsonl`` (the ROI sidecar) and, once
closed, ``00003.json`` (duration and frame counts). A segment without the ``.json`` was cut
short (a crash): it still plays up to its last complete fragment. The disk is the truth, so
recordings outlive restarts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEDIA_SUFFIXES = (".mp4", ".flv")
_ID = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{6})-(\d{5})$")


@dataclass(frozen=True, slots=True)
class Recording:
    id: str
    app: str
    stream: str
    session: str
    index: int
    media: Path

    @property
    def sidecar(self) -> Path:
        return self.media.with_suffix(".roi.jsonl")

    @property
    def summary_file(self) -> Path:
        return self.media.with_suffix(".json")

    def files(self) -> list[Path]:
        return [self.media, self.sidecar, self.summary_file]

    def summary(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def as_dict(self, open_ids: frozenset[str] = frozenset()) -> dict[str, Any]:
        summary = self.summary() or {}
        try:
            size = self.media.stat().st_size
        except OSError:
            size = 0
        state = "recording" if self.id in open_ids else ("complete" if summary else "cut short")
        return {
            "id": self.id,
            "app": self.app,
            "stream": self.stream,
            "session": self.session,
            "segment": self.index,
            "format": self.media.suffix[1:],
            "state": state,
            "bytes": size,
            "duration_ms": summary.get("duration_ms"),
            "video_frames": summary.get("video_frames"),
            "audio_frames": summary.get("audio_frames"),
            "media_url": f"/vod/{self.id}/media",
            "regions_url": f"/vod/{self.id}/regions.jsonl",
            "player_url": f"/play/vod/{self.id}",
        }


def recordings(root: Path, app: str | None = None, stream: str | None = None) -> list[Recording]:
    """Every segment under ``root``, oldest first (session ids start with their UTC time)."""
    found: list[Recording] = []
    if not root.is_dir():
        return found
    for media in root.glob("*/*/*/*"):
        if media.suffix not in MEDIA_SUFFIXES or not media.stem.isdigit():
            continue
        session_dir = media.parent
        stream_dir = session_dir.parent
        if (app is not None and stream_dir.parent.name != app) or (
            stream is not None and stream_dir.name != stream
        ):
            continue
        found.append(
            Recording(
                id=f"{session_dir.name}-{media.stem}",
                app=stream_dir.parent.name,
                stream=stream_dir.name,
                session=session_dir.name,
                index=int(media.stem),
                media=media,
            )
        )
    found.sort(key=lambda r: (r.session, r.index))
    return found


def find(root: Path, recording_id: str) -> Recording | None:
    match = _ID.match(recording_id)
    if match is None:
        return None
    session, index = match.group(1), int(match.group(2))
    for media in root.glob(f"*/*/{session}/{index:05d}.*"):
        if media.suffix in MEDIA_SUFFIXES:
            return Recording(
                recording_id,
                media.parent.parent.parent.name,
                media.parent.parent.name,
                session,
                index,
                media,
            )
    return None


__all__ = ["MEDIA_SUFFIXES", "Recording", "find", "recordings"]
